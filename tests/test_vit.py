"""The hand-written ViT against timm (the oracle, test-only), SDPA against explicit attention, and the sin-cos table
against its closed form."""
import functools
import math

import pytest
import torch

from pacx.models.pos_embed import interpolate_pos_embed, sincos_2d
from pacx.models.vit import VisionTransformer, resize_pos_embed, vit_base, vit_tiny

timm = pytest.importorskip("timm")


def test_vit_base_parameter_count():
    with torch.device("meta"):
        model = VisionTransformer(vit_base())
    assert sum(p.numel() for p in model.parameters()) == 85_798_656


def test_vit_base_matches_timm_with_copied_weights():
    torch.manual_seed(0)
    ref = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0).eval()
    ours = VisionTransformer(vit_base(learned_pos_embed=True)).eval()
    missing, unexpected = ours.load_state_dict(ref.state_dict(), strict=True)
    assert not missing and not unexpected
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want = ref.forward_features(x)
        got = ours.forward_features(x)
    assert got.shape == (2, 197, 768)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours(x), want[:, 0], atol=1e-5, rtol=0)


def test_our_state_dict_loads_into_timm_strictly():
    """The key layout is the same in both directions (with timm's head removed)."""
    ours = VisionTransformer(vit_base())
    ref = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    ref.load_state_dict(ours.state_dict(), strict=True)


def test_registers_match_timm_dinov2_style():
    """Registers get no position embedding (DINOv2 / timm `no_embed_class`); timm's patch-only table gains a zero
    CLS row in our layout."""
    torch.manual_seed(1)
    cfg = vit_tiny(num_registers=4, learned_pos_embed=True)
    ref = timm.models.vision_transformer.VisionTransformer(
        img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.depth,
        num_heads=cfg.num_heads, reg_tokens=4, no_embed_class=True, num_classes=0,
        norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6),
    ).eval()
    sd = ref.state_dict()
    sd["pos_embed"] = torch.cat([torch.zeros(1, 1, cfg.embed_dim), sd["pos_embed"]], dim=1)
    ours = VisionTransformer(cfg).eval()
    ours.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_features(x), ref.forward_features(x), atol=1e-5, rtol=0)
    assert ours.forward_features(x).shape == (2, 1 + 4 + 64, cfg.embed_dim)


def test_returned_attention_equals_sdpa_path_and_rows_sum_to_one():
    torch.manual_seed(2)
    model = VisionTransformer(vit_tiny()).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        fast = model.forward_features(x)
        slow, attns = model.forward_features(x, return_attn=True)
    torch.testing.assert_close(slow, fast, atol=1e-5, rtol=0)
    assert len(attns) == 4 and attns[0].shape == (3, 4, 65, 65)
    torch.testing.assert_close(attns[-1].sum(-1), torch.ones(3, 4, 65))


def test_sincos_table_closed_form():
    D, G = 16, 3
    table = sincos_2d(D, G, extra_tokens=1)
    assert table.shape == (1 + G * G, D)
    assert torch.all(table[0] == 0)
    h, w = 2, 1  # patch in row 2, column 1 sits at index h*G + w
    row = table[1 + h * G + w]
    quarter = D // 4
    for i in range(quarter):
        omega = 1.0 / 10000 ** (i / quarter)
        assert row[i].item() == pytest.approx(math.sin(w * omega), abs=1e-6)  # first half: column
        assert row[quarter + i].item() == pytest.approx(math.cos(w * omega), abs=1e-6)
        assert row[2 * quarter + i].item() == pytest.approx(math.sin(h * omega), abs=1e-6)  # second half: row
        assert row[3 * quarter + i].item() == pytest.approx(math.cos(h * omega), abs=1e-6)


def test_pos_embed_interpolation_matches_timm_resample():
    from timm.layers import resample_abs_pos_embed

    torch.manual_seed(3)
    pe = torch.randn(1, 1 + 14 * 14, 32)
    want = resample_abs_pos_embed(pe, new_size=(20, 20), num_prefix_tokens=1, interpolation="bicubic",
                                  antialias=False)
    got = interpolate_pos_embed(pe, 20, extra_tokens=1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # Loading a 224-px checkpoint into a 320-px model interpolates and then loads strictly.
    big = VisionTransformer(vit_tiny(img_size=96))
    small_sd = VisionTransformer(vit_tiny()).state_dict()
    big.load_state_dict(resize_pos_embed(small_sd, big.cfg), strict=True)
    assert big.pos_embed.shape == (1, 1 + 12 * 12, 64)
