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


def test_resizes_are_torchvision_bilinear_as_the_original():
    """The original's T.Resize / T.RandomResizedCrop use torchvision's default (bilinear) interpolation."""
    import torchvision.transforms.v2 as V

    def to_input(x):
        return V.Normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)(V.ToDtype(torch.float32, scale=True)(x))

    img = torch.randint(0, 256, (1, 90, 70), dtype=torch.uint8).expand(3, -1, -1).clone()
    torch.testing.assert_close(T.eval_resize(img, 64), to_input(V.Resize((64, 64))(img)), atol=1e-5, rtol=0)
    for seed in range(4):
        mirror = torch.Generator().manual_seed(seed)  # the same draws as mae_train's: crop, then flip
        top, left, h, w = T.resized_crop_params(mirror, 90, 70, (0.5, 1.0), (3 / 4, 4 / 3))
        want = V.functional.resized_crop(img, top, left, h, w, [64, 64])
        if torch.rand((), generator=mirror).item() < 0.5:
            want = V.functional.horizontal_flip(want)
        torch.testing.assert_close(T.mae_train(img, torch.Generator().manual_seed(seed), 64), to_input(want),
                                   atol=1e-5, rtol=0)


def test_color_jitter_draws_its_order_like_torchvision():
    """Both orders occur, and each output is brightness and contrast applied by hand in the drawn order."""
    import torchvision.transforms.v2.functional as F

    img = torch.rand(1, 16, 16)
    orders = set()
    for seed in range(40):
        g, mirror = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        u = [torch.rand((), generator=mirror).item() for _ in range(3)]  # the draws: order, brightness, contrast
        b, c = 0.8 + 0.4 * u[1], 0.8 + 0.4 * u[2]
        contrast_first = u[0] < 0.5
        orders.add(contrast_first)
        want = F.adjust_brightness(F.adjust_contrast(img, c).clamp(0, 1), b) if contrast_first else \
            F.adjust_contrast(F.adjust_brightness(img, b).clamp(0, 1), c)
        torch.testing.assert_close(T.color_jitter(img, g), want.clamp(0, 1), atol=1e-6, rtol=0)
    assert orders == {True, False}
