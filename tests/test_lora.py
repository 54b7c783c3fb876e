"""LoRA (pacx/models/lora.py): the layer against its formula, merge == unmerged, export loads strictly into pacx and
timm,
the Stage-2 trainable-parameter count, the MAE decoder left alone, and the original PaCX checkpoint key mapping."""
import math

import pytest
import torch
import torch.nn as nn

from pacx.models.lora import LoRALinear, from_original_pacx_stage2, inject_lora, mark_trainable, merge_lora
from pacx.models.mae import MaskedAutoencoder, mae_tiny
from pacx.models.vit import VisionTransformer, vit_base, vit_tiny

TARGETS = ("attn.qkv", "mlp.fc1", "mlp.fc2")


def randomise_lora(model: nn.Module, seed: int = 0) -> None:
    """B starts at zero; give it values so the adapters actually change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.1)


def test_zero_b_is_the_base_layer():
    torch.manual_seed(0)
    base = nn.Linear(12, 20)
    lora = LoRALinear(base, r=4, alpha=8, dropout=0.1).train()  # dropout active: still exact, B is zero
    x = torch.randn(3, 5, 12)
    assert torch.equal(lora(x), base(x))


def test_layer_matches_formula_and_init():
    torch.manual_seed(0)
    base = nn.Linear(12, 20)
    lora = LoRALinear(base, r=4, alpha=8, dropout=0.1).eval()
    randomise_lora(lora)
    x = torch.randn(3, 12)
    expected = x @ base.weight.t() + base.bias + 2.0 * x @ (lora.lora_B @ lora.lora_A).t()  # scaling 8 / 4
    torch.testing.assert_close(lora(x), expected)
    # kaiming_uniform(a=sqrt(5)) on (r, in): U(-1/sqrt(in), 1/sqrt(in)), as nn.Linear's default weight init.
    bound = 1 / math.sqrt(12)
    assert lora.lora_A.abs().max() <= bound and lora.lora_A.abs().max() > 0.5 * bound
    assert lora.lora_A.shape == (4, 12) and lora.lora_B.shape == (20, 4)


def test_merge_unmerge_exact_and_idempotent():
    torch.manual_seed(0)
    lora = LoRALinear(nn.Linear(16, 24), r=4, alpha=16).eval()
    randomise_lora(lora)
    w0 = lora.base_layer.weight.detach().clone()
    x = torch.randn(7, 16)
    y = lora(x)
    lora.merge()
    w1 = lora.base_layer.weight.detach().clone()
    lora.merge()  # second call: no-op
    assert torch.equal(lora.base_layer.weight, w1)
    torch.testing.assert_close(lora(x), y, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(w1, w0 + 4.0 * lora.lora_B @ lora.lora_A)
    lora.unmerge()
    lora.unmerge()
    torch.testing.assert_close(lora.base_layer.weight, w0, atol=1e-7, rtol=0)
    torch.testing.assert_close(lora(x), y, atol=1e-6, rtol=1e-5)


def test_inject_merge_export_loads_strictly():
    torch.manual_seed(0)
    cfg = vit_tiny()
    model = VisionTransformer(cfg).eval()
    original_keys = list(model.state_dict())
    x = torch.randn(2, 3, cfg.img_size, cfg.img_size)
    y_base = model(x)
    names = inject_lora(model)
    assert names == [f"blocks.{i}.{t}" for i in range(cfg.depth) for t in TARGETS]
    assert torch.equal(model(x), y_base)  # B = 0: the adapted model starts as the pretrained one
    randomise_lora(model)
    y_lora = model(x)
    assert not torch.allclose(y_lora, y_base, atol=1e-3)

    merged = merge_lora(model)
    assert list(merged.state_dict()) == original_keys
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    assert isinstance(model.blocks[0].attn.qkv, LoRALinear)  # the source model is untouched
    fresh = VisionTransformer(cfg).eval()
    fresh.load_state_dict(merged.state_dict(), strict=True)
    torch.testing.assert_close(fresh(x), y_lora, atol=1e-5, rtol=1e-4)

    # In-place merge gives the same weights as the exported copy.
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.merge()
    torch.testing.assert_close(model(x), y_lora, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(merge_lora(model).state_dict()["blocks.0.mlp.fc1.weight"],
                               merged.state_dict()["blocks.0.mlp.fc1.weight"])


def test_export_loads_strictly_into_timm():
    timm_vit = pytest.importorskip("timm.models.vision_transformer")
    torch.manual_seed(0)
    cfg = vit_tiny()
    model = VisionTransformer(cfg).eval()
    inject_lora(model)
    randomise_lora(model)
    x = torch.randn(2, 3, cfg.img_size, cfg.img_size)
    ref = timm_vit.VisionTransformer(img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim,
                                     depth=cfg.depth, num_heads=cfg.num_heads, num_classes=0).eval()
    ref.load_state_dict(merge_lora(model).state_dict(), strict=True)
    torch.testing.assert_close(ref(x), model(x), atol=1e-5, rtol=1e-4)


def test_mark_trainable_last_n_counts_by_hand():
    cfg = vit_tiny()
    model = VisionTransformer(cfg)
    D, Hd = cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio)
    block = 2 * (2 * D) + (D * 3 * D + 3 * D) + (D * D + D) + (D * Hd + Hd) + (Hd * D + D)
    assert mark_trainable(model, "last_n", n=2) == 2 * block + 2 * D
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.startswith(("blocks.2.", "blocks.3.", "norm.")) for n in trainable)
    assert "blocks.1.attn.qkv.weight" not in trainable and "cls_token" not in trainable
    with pytest.raises(ValueError, match="strategy"):
        mark_trainable(model, "full")


@pytest.fixture(scope="module")
def vit_b_lora():
    torch.manual_seed(0)
    model = VisionTransformer(vit_base())
    inject_lora(model, r=8, alpha=16, dropout=0.1)
    return model


def test_vit_b_lora_trainable_count(vit_b_lora):
    r, D, Hd = 8, 768, 3072
    per_block = r * (D + 3 * D) + r * (D + Hd) + r * (Hd + D)  # qkv, fc1, fc2: r * (in + out) each
    expected = 12 * per_block + 2 * D  # + the final LayerNorm
    assert expected == 1_033_728
    assert mark_trainable(vit_b_lora, "lora") == expected
    trainable = [n for n, p in vit_b_lora.named_parameters() if p.requires_grad]
    adapters = [n for n in vit_b_lora.state_dict() if n.endswith((".lora_A", ".lora_B"))]
    assert len(adapters) == 12 * 3 * 2
    assert set(trainable) == set(adapters) | {"norm.weight", "norm.bias"}
    qkv = vit_b_lora.blocks[0].attn.qkv
    assert qkv.lora_A.shape == (8, 768) and qkv.lora_B.shape == (2304, 8) and qkv.scaling == 2.0


def test_mae_decoder_never_adapted():
    mae = MaskedAutoencoder(mae_tiny())
    names = inject_lora(mae)
    assert names and all(n.startswith("blocks.") for n in names)
    assert all(isinstance(b.attn.qkv, LoRALinear) for b in mae.blocks)
    assert all(type(b.attn.qkv) is nn.Linear and type(b.mlp.fc1) is nn.Linear for b in mae.decoder_blocks)
    with pytest.raises(ValueError, match="already has LoRA"):
        inject_lora(mae)


def to_peft_layout(state_dict: dict) -> dict:
    """How the reference's Lightning + peft checkpoint spells these tensors (written out independently)."""
    out = {}
    for k, v in state_dict.items():
        for part in ("lora_A", "lora_B"):
            if k.endswith("." + part):
                k = k[: -len(part)] + part + ".default.weight"
        out["cxr_encoder.base_model.model." + k] = v
    return out


def test_original_pacx_stage2_mapping_round_trips():
    torch.manual_seed(0)
    cfg = vit_tiny()
    src = VisionTransformer(cfg)
    inject_lora(src)
    randomise_lora(src)
    ckpt = to_peft_layout(src.state_dict())
    assert "cxr_encoder.base_model.model.blocks.0.attn.qkv.base_layer.weight" in ckpt
    assert ckpt["cxr_encoder.base_model.model.blocks.0.attn.qkv.lora_A.default.weight"].shape == (8, cfg.embed_dim)
    ckpt["cxr_to_shared.mlp.1.weight"] = torch.zeros(3)  # non-encoder keys are skipped
    ckpt["loss_module.logit_scale"] = torch.zeros(())

    mapped = from_original_pacx_stage2(ckpt)
    assert mapped.keys() == src.state_dict().keys()
    dst = VisionTransformer(cfg)
    inject_lora(dst)
    dst.load_state_dict(mapped, strict=True)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k

    with pytest.raises(ValueError, match="default"):
        from_original_pacx_stage2({"cxr_encoder.base_model.model.blocks.0.attn.qkv.lora_A.other.weight": 0})
    with pytest.raises(ValueError, match="cxr_encoder.base_model.model."):
        from_original_pacx_stage2({"model.blocks.0.attn.qkv.weight": 0})
