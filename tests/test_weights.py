"""Every checkpoint layout users bring loads into the same features; bad files are refused with a clear line."""
import pickle

import pytest
import torch

from pacx.errors import PacxError
from pacx.models.lora import inject_lora
from pacx.models.mae import MaskedAutoencoder, mae_tiny
from pacx.models.pacx_model import PaCX, PaCXConfig, export_checkpoint
from pacx.models.heads import HeadsConfig
from pacx.models.vit import VisionTransformer, vit_tiny
from pacx.weights import load_encoder_weights, load_mae_weights, load_vit, read_checkpoint


def features(model, x):
    with torch.no_grad():
        return model.eval().forward_features(x)


@pytest.fixture
def mae():
    torch.manual_seed(0)
    return MaskedAutoencoder(mae_tiny())


def test_official_mae_layouts(mae, tmp_path):
    x = torch.randn(2, 3, 64, 64)
    torch.save({"model": mae.state_dict()}, tmp_path / "full.pth")  # mae_pretrain_vit_base_full.pth layout
    torch.save({"model": mae.encoder_state_dict()}, tmp_path / "enc.pth")  # mae_pretrain_vit_base.pth layout
    other = MaskedAutoencoder(mae_tiny())
    assert load_mae_weights(other, read_checkpoint(tmp_path / "full.pth")) == "full"
    assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), mae.state_dict().values()))
    fresh = MaskedAutoencoder(mae_tiny())
    decoder_before = fresh.decoder_pred.weight.clone()
    assert load_mae_weights(fresh, read_checkpoint(tmp_path / "enc.pth")) == "encoder"
    assert torch.equal(fresh.decoder_pred.weight, decoder_before)  # decoder left at its initialisation
    vit = load_vit(str(tmp_path / "full.pth"), "tiny")
    torch.testing.assert_close(features(vit, x), features(mae, x))


def test_original_pacx_stage1_lightning_layout(mae, tmp_path):
    """Lightning Stage 1: {'state_dict': {'model.<MAE key>'}}."""
    torch.save({"state_dict": {f"model.{k}": v for k, v in mae.state_dict().items()}, "epoch": 399},
               tmp_path / "stage1.ckpt")
    vit = load_vit(str(tmp_path / "stage1.ckpt"), "tiny")
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(features(vit, x), features(mae, x))


def test_original_pacx_stage2_layout_equals_pacx_weights(mae, tmp_path):
    """An original Stage-2 checkpoint (peft keys under cxr_encoder.base_model.model.) built by hand from a pacx
    model with non-zero adapters gives the features of pacx's own merged export."""
    torch.manual_seed(1)
    enc = VisionTransformer(vit_tiny(norm_eps=1e-5))
    enc.load_state_dict(mae.encoder_state_dict())
    model = PaCX(PaCXConfig(enc.cfg, HeadsConfig(cxr_dim=64)), enc)
    for name, p in model.encoder.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    peft = {}
    for k, v in model.encoder.state_dict().items():
        k = k.replace(".lora_A", ".lora_A.default.weight").replace(".lora_B", ".lora_B.default.weight")
        peft[f"cxr_encoder.base_model.model.{k}"] = v
    peft["cxr_to_shared.mlp.1.weight"] = torch.zeros(256, 64)  # heads ride along in the real files
    torch.save({"state_dict": peft}, tmp_path / "stage2.ckpt")
    torch.save(export_checkpoint(model), tmp_path / "encoder.pt")

    from_original = load_vit(str(tmp_path / "stage2.ckpt"), "tiny", norm_eps=1e-5)
    from_pacx = load_vit(str(tmp_path / "encoder.pt"))  # its config from the file: tiny, eps 1e-5
    assert from_pacx.cfg.norm_eps == 1e-5 and from_pacx.cfg.embed_dim == 64
    x = torch.randn(2, 3, 64, 64)
    want = features(model.encoder.eval(), x)  # unmerged adapters, dropout off
    torch.testing.assert_close(features(from_original, x), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(features(from_pacx, x), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("r, alpha", [(8, 16.0), (4, 16.0), (8, 32.0), (2, 3.0)])
def test_stage2_last_pt_loads_equal_to_its_encoder_pt(mae, tmp_path, r, alpha):
    """A pacx Stage-2 training checkpoint (adapters unmerged) read as a ViT merges with its own alpha / r: its
    features equal those of the merged export, for any rank and alpha (a fixed scaling of 2 fails all but (8, 16))."""
    torch.manual_seed(2)
    enc = VisionTransformer(vit_tiny(norm_eps=1e-5))
    enc.load_state_dict(mae.encoder_state_dict())
    model = PaCX(PaCXConfig(enc.cfg, HeadsConfig(cxr_dim=64), lora_r=r, lora_alpha=alpha), enc)
    for name, p in model.encoder.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    torch.save({"model": model.state_dict(), "config": model.config_dict()}, tmp_path / "last.pt")
    torch.save(export_checkpoint(model), tmp_path / "encoder.pt")
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(features(load_vit(str(tmp_path / "last.pt")), x),
                               features(load_vit(str(tmp_path / "encoder.pt")), x), atol=1e-5, rtol=0)


def test_wrong_architecture_names_the_keys(mae, tmp_path):
    torch.save({"model": mae.state_dict()}, tmp_path / "tiny.pth")
    bigger = VisionTransformer(vit_tiny(depth=6))
    with pytest.raises(PacxError, match=r"tiny.pth.*missing 24: blocks\.4\."):
        load_encoder_weights(bigger, read_checkpoint(tmp_path / "tiny.pth"))
    wider = VisionTransformer(vit_tiny(embed_dim=128))
    with pytest.raises(PacxError, match=r"shape mismatch: blocks.0.attn.proj.bias \(64,\) vs \(128,\)"):
        load_encoder_weights(wider, read_checkpoint(tmp_path / "tiny.pth"))


class Payload:
    def __reduce__(self):
        return (open, ("/tmp/pacx_payload_ran", "w"))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    import os

    if os.path.exists("/tmp/pacx_payload_ran"):
        os.remove("/tmp/pacx_payload_ran")
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        torch.save({"model": {"x": torch.zeros(1)}, "extra": Payload()}, f, pickle_protocol=2)
    with pytest.raises(PacxError, match="evil.pth: not a loadable checkpoint"):
        load_vit(str(path), "tiny")
    assert not os.path.exists("/tmp/pacx_payload_ran")
    with open(path, "wb") as f:
        pickle.dump({"model": {}}, f)  # not even a torch file
    with pytest.raises(PacxError, match="evil.pth"):
        load_vit(str(path), "tiny")


def test_lora_never_touches_the_mae_decoder(mae):
    names = inject_lora(mae)
    assert names and not any(n.startswith("decoder") for n in names)


def test_original_stage2_files_read_with_their_eps_and_the_last_n_ablation_loads(mae, tmp_path):
    """Original Stage-2 checkpoints carry no config; the original evaluates them with LayerNorm eps 1e-5, so pacx
    reads them so by default (another eps on request). The last_n_blocks ablation's file (keys cxr_encoder.<ViT key>,
    no peft) loads too, to the features of the encoder it holds."""
    from pacx.weights import load_backbone

    peft = {f"cxr_encoder.base_model.model.{k}": v for k, v in mae.encoder_state_dict().items()}
    torch.save({"state_dict": peft}, tmp_path / "stage2.ckpt")
    vit, ckpt = load_backbone(str(tmp_path / "stage2.ckpt"), "tiny")
    assert vit.cfg.norm_eps == 1e-5 and ckpt.stage2
    assert load_vit(str(tmp_path / "stage2.ckpt"), "tiny", norm_eps=1e-6).cfg.norm_eps == 1e-6
    assert load_vit("", "tiny").cfg.norm_eps == 1e-6  # a random init keeps the preset's

    plain = {f"cxr_encoder.{k}": v for k, v in mae.encoder_state_dict().items()}
    torch.save({"state_dict": {**plain, "cxr_to_shared.mlp.1.weight": torch.zeros(2, 64)}}, tmp_path / "lastn.ckpt")
    want = VisionTransformer(vit_tiny(norm_eps=1e-5))
    want.load_state_dict(mae.encoder_state_dict())
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(features(load_vit(str(tmp_path / "lastn.ckpt"), "tiny"), x), features(want, x))


def test_a_learned_position_table_is_recognised_and_fine_tuned(mae, tmp_path):
    """timm's ImageNet ViT learns its position table; MAE's is the fixed sin-cos one. Read from the weights: a table
    that is not sin-cos makes the backbone's pos_embed trainable under fine-tuning (the original trains it), a
    sin-cos one stays frozen."""
    from pacx.eval.finetune import prepare_finetune

    state = mae.encoder_state_dict()
    torch.save(state, tmp_path / "mae_like.pth")
    torch.save({**state, "pos_embed": state["pos_embed"] + 0.01 * torch.randn_like(state["pos_embed"]),
                "head.weight": torch.zeros(10, 64), "head.bias": torch.zeros(10)}, tmp_path / "timm_like.pth")
    fixed, learned = (prepare_finetune(load_vit(str(tmp_path / f), "tiny"), 2, "finetune")
                      for f in ("mae_like.pth", "timm_like.pth"))
    assert not fixed.backbone.pos_embed.requires_grad and learned.backbone.pos_embed.requires_grad


def test_stage2_backbone_fine_tunes_only_its_head_by_default(mae, tmp_path):
    """The original's "fine-tune" of a PaCX backbone trains the head only (peft's frozen base weights stay frozen);
    evaluate.py does the same unless --stage2_finetune full. Other backbones train fully."""
    import evaluate

    enc = VisionTransformer(vit_tiny(norm_eps=1e-5))
    enc.load_state_dict(mae.encoder_state_dict())
    torch.save(export_checkpoint(PaCX(PaCXConfig(enc.cfg, HeadsConfig(cxr_dim=64)), enc)), tmp_path / "encoder.pt")
    torch.save({"model": mae.encoder_state_dict()}, tmp_path / "mae.pth")

    def trainable(path, *flags):
        cfg = evaluate.parse_config(evaluate.Config, ["--model", "tiny", "--mode", "finetune", *flags])
        model = evaluate.finetune_model(str(tmp_path / path), 2, cfg, vit_tiny())
        return {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}

    assert trainable("encoder.pt") == {"head"}
    assert trainable("encoder.pt", "--stage2_finetune", "full") == {"head", "backbone"}
    assert trainable("mae.pth") == {"head", "backbone"}
