"""Augmentations: per-sample determinism, the reference parameter ranges, and the one-channel shortcut against the
plain three-channel computation."""

import pytest
import torch

import pacx.data.transforms as T


def test_crop_params_respect_scale_and_ratio():
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        top, left, h, w = T.resized_crop_params(g, 120, 200, (0.5, 1.0), (3 / 4, 4 / 3))
        assert 0 <= top and top + h <= 120 and 0 <= left and left + w <= 200
        area = h * w / (120 * 200)
        assert 0.5 - 0.02 <= area <= 1.0 + 1e-9
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05


def test_same_seed_same_augmentation_and_seeds_differ():
    img = torch.randint(0, 256, (1, 90, 70), dtype=torch.uint8).expand(3, -1, -1).clone()
    for fn in (T.mae_train, T.distill_train):
        a = fn(img, torch.Generator().manual_seed(5), 64)
        b = fn(img, torch.Generator().manual_seed(5), 64)
        c = fn(img, torch.Generator().manual_seed(6), 64)
        assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (3, 64, 64)


@pytest.mark.parametrize("fn", [T.mae_train, T.distill_train, T.eval_resize])
def test_one_channel_shortcut_equals_three_channel_computation(fn, monkeypatch):
    img = torch.randint(0, 256, (1, 90, 70), dtype=torch.uint8).expand(3, -1, -1).clone()
    args = (torch.Generator().manual_seed(3), 64) if fn is not T.eval_resize else (64,)
    fast = fn(img, *args)
    monkeypatch.setattr(T, "one_channel", lambda x: x)  # the plain path: every op on all three channels
    args = (torch.Generator().manual_seed(3), 64) if fn is not T.eval_resize else (64,)
    torch.testing.assert_close(fast, fn(img, *args), atol=1e-5, rtol=0)


def test_normalisation_is_imagenet_and_denormalize_inverts_it():
    img = torch.full((3, 4, 4), 255, dtype=torch.uint8)
    out = T.normalize(img)
    for c in range(3):
        assert out[c, 0, 0].item() == pytest.approx((1 - T.IMAGENET_MEAN[c]) / T.IMAGENET_STD[c], abs=1e-6)
    x = torch.rand(3, 5, 5)
    torch.testing.assert_close(T.denormalize(T.normalize((x * 255).round().to(torch.uint8))),
                               (x * 255).round() / 255, atol=1e-6, rtol=0)
