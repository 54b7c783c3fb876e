"""Image augmentations of the reference, on uint8 tensors, with every random draw from an explicit generator.

METHOD.md "Stage 1a" (MAE: RandomResizedCrop(224, scale=(0.5, 1.0)) + horizontal flip, ImageNet mean/std; val
Resize(224)) and "Stage 2" (the distillation augmentations). Parameters are drawn exactly as torchvision's
`RandomResizedCrop.get_params` draws them, but from the per-sample generator of `pacx.loader`, so a sample's
augmentation depends on its seed alone (not on worker scheduling or the global RNG). Geometry runs on uint8 (3, H, W)
tensors; the float conversion and normalisation come last.

Validation resizes to a square (size, size): the reference's `Resize(224)` keeps the aspect ratio, which only works
when every image is already square (Symile-MIMIC's 320 x 320 crops are); a square resize keeps batches stackable
for any data set.
"""
import math

import torch
import torchvision.transforms.v2.functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g).item()


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Integer in [lo, hi)."""
    return int(torch.randint(lo, hi, (), generator=g).item())


def resized_crop_params(g: torch.Generator, height: int, width: int, scale, ratio) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop: torchvision's RandomResizedCrop.get_params, 10 tries then centre crop."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * _uniform(g, *scale)
        aspect = math.exp(_uniform(g, *log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return _randint(g, 0, height - h + 1), _randint(g, 0, width - w + 1), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def normalize(img: torch.Tensor) -> torch.Tensor:
    """uint8 (3 or 1, H, W) -> float32 ImageNet-normalised (3, H, W); one channel is copied to three first."""
    return TF.normalize(img.float().expand(3, -1, -1) / 255.0, IMAGENET_MEAN, IMAGENET_STD)


def one_channel(img: torch.Tensor) -> torch.Tensor:
    """(1, H, W) when the 3 channels are copies of one gray image (as every pacx reader returns): the geometry then
    runs once instead of three times, and `normalize` expands it back to 3 channels."""
    if img.shape[0] == 3 and torch.equal(img[0], img[1]) and torch.equal(img[1], img[2]):
        return img[:1]
    return img


def mae_train(img: torch.Tensor, g: torch.Generator, size: int = 224, scale=(0.5, 1.0)) -> torch.Tensor:
    """Stage 1: RandomResizedCrop(size, scale) + h-flip. Bilinear, as the original PaCX-MAE (`data_modules.py`:
    torchvision's default; the official MAE's `main_pretrain.py` uses bicubic)."""
    img = one_channel(img)
    top, left, h, w = resized_crop_params(g, img.shape[-2], img.shape[-1], scale, (3 / 4, 4 / 3))
    img = TF.resized_crop(img, top, left, h, w, [size, size], interpolation=TF.InterpolationMode.BILINEAR,
                          antialias=True)
    if torch.rand((), generator=g).item() < 0.5:
        img = TF.horizontal_flip(img)
    return normalize(img)


def eval_resize(img: torch.Tensor, size: int = 224) -> torch.Tensor:
    """Validation / feature extraction: square resize (bilinear, the original's `T.Resize`) and normalisation."""
    img = TF.resize(one_channel(img), [size, size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return normalize(img)


def denormalize(img: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised float (3, H, W) -> [0, 1] float (Symile-MIMIC stores its crops normalised)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=img.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=img.dtype).view(3, 1, 1)
    return (img * std + mean).clamp(0, 1)


def distill_train(img: torch.Tensor, g: torch.Generator, size: int = 224) -> torch.Tensor:
    """Stage 2 (METHOD.md "Stage 2", CXR aug), on a uint8 or [0, 1] float (3, H, W) image:
    RandomResizedCrop(size, scale (0.75, 1), ratio (0.85, 1.15)); p=0.6 RandomAffine(10 deg, translate 0.1,
    scale 0.9-1.1); p=0.3 ColorJitter(brightness 0.2, contrast 0.2); p=0.15 GaussianBlur(5, sigma 0.1-2);
    ImageNet normalisation; RandomErasing(p 0.25, scale 0.02-0.1, ratio 0.3-3.3, value 0)."""
    img = one_channel(img)
    img = img.float() / 255.0 if img.dtype == torch.uint8 else img
    top, left, h, w = resized_crop_params(g, img.shape[-2], img.shape[-1], (0.75, 1.0), (0.85, 1.15))
    img = TF.resized_crop(img, top, left, h, w, [size, size], antialias=True)
    if _uniform(g, 0, 1) < 0.6:
        max_shift = 0.1 * size
        img = TF.affine(img, angle=_uniform(g, -10, 10),
                        translate=[round(_uniform(g, -max_shift, max_shift)),
                                   round(_uniform(g, -max_shift, max_shift))],
                        scale=_uniform(g, 0.9, 1.1), shear=[0.0, 0.0])
    if _uniform(g, 0, 1) < 0.3:
        img = color_jitter(img, g)
    if _uniform(g, 0, 1) < 0.15:
        sigma = _uniform(g, 0.1, 2.0)
        img = TF.gaussian_blur(img, [5, 5], [sigma, sigma])
    img = TF.normalize(img.expand(3, -1, -1), IMAGENET_MEAN, IMAGENET_STD)
    if _uniform(g, 0, 1) < 0.25:
        img = _erase(img, g, scale=(0.02, 0.1), ratio=(0.3, 3.3))
    return img


def color_jitter(img: torch.Tensor, g: torch.Generator, strength: float = 0.2) -> torch.Tensor:
    """ColorJitter(brightness, contrast) on a [0, 1] float image. Like torchvision's, it draws the order of its
    adjustments (`torch.randperm` there), then the factors, then applies them in that order."""
    contrast_first = _uniform(g, 0, 1) < 0.5
    brightness, contrast = _uniform(g, 1 - strength, 1 + strength), _uniform(g, 1 - strength, 1 + strength)
    steps = [(TF.adjust_brightness, brightness), (TF.adjust_contrast, contrast)]
    for adjust, factor in reversed(steps) if contrast_first else steps:
        img = adjust(img, factor).clamp(0, 1)
    return img


def _erase(img: torch.Tensor, g: torch.Generator, scale, ratio) -> torch.Tensor:
    """RandomErasing's box search (10 tries, value 0); the image is unchanged when no box fits."""
    H, W = img.shape[-2:]
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        area = H * W * _uniform(g, *scale)
        aspect = math.exp(_uniform(g, *log_ratio))
        h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if h < H and w < W:
            i, j = _randint(g, 0, H - h + 1), _randint(g, 0, W - w + 1)
            return TF.erase(img, i, j, h, w, torch.zeros(()))
    return img
