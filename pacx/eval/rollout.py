"""Attention rollout: where the CLS token of a ViT looks, accumulated over all layers, as an image-sized map.

Implements METHOD.md "Stage 3" (Attention rollout) after Abnar & Zuidema, "Quantifying Attention Flow in
Transformers" (2020), as the reference PaCX-MAE computes it (Lyce24/PACX-MAE `Stage3_VIS.ipynb`,
`attention_rollout_map` with head fusion "mean", start layer 0):
    A_l = mean over heads of layer l's attention (B, T, T);  A_l <- (A_l + I) / row sums (+ 1e-6)
    R = A_L @ ... @ A_2 @ A_1;  map = R[CLS, patches] -> (G, G) -> bilinear upsample to S x S -> min-max to [0, 1].
Register tokens, when the ViT has them, take part in the product but not in the map.

Quirk kept by default (METHOD.md "Quirks"): the reference feeds the rollout images scaled to [0, 1] *without* the
ImageNet normalisation the backbones were trained with (`load_cxr_as_tensor`); `rollout_input(..., imagenet_norm=True)`
gives the clean input.

Notation: B = batch, H = heads, T = tokens (prefix + G*G), G = patches per side, S = image side.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image

from pacx.data.transforms import normalize


def attention_rollout(attns: list[torch.Tensor], num_prefix: int = 1, eps: float = 1e-6) -> torch.Tensor:
    """Per-layer attention probabilities (B, H, T, T), first layer first -> CLS-to-patch rollout (B, G, G)."""
    joint = None
    for attn in attns:
        a = attn.float().mean(dim=1)  # (B, T, T)
        a = a + torch.eye(a.shape[-1], device=a.device)
        a = a / (a.sum(dim=-1, keepdim=True) + eps)
        joint = a if joint is None else a @ joint  # later layers multiply from the left
    cls_to_patches = joint[:, 0, num_prefix:]  # (B, G*G)
    G = int(round(cls_to_patches.shape[-1] ** 0.5))
    if G * G != cls_to_patches.shape[-1]:
        raise ValueError(f"attention_rollout: {cls_to_patches.shape[-1]} patch tokens after {num_prefix} prefix "
                         f"token(s) do not form a square grid; is num_prefix right?")
    return cls_to_patches.reshape(-1, G, G)  # (B, G, G), patch index h*G + w


def upsample_minmax(maps: torch.Tensor, size: int, eps: float = 1e-6) -> torch.Tensor:
    """(B, G, G) -> (B, S, S) bilinear (align_corners=False), each map min-max scaled to [0, 1]."""
    up = F.interpolate(maps[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]  # (B, S, S)
    up = up - up.amin(dim=(-2, -1), keepdim=True)
    return up / (up.amax(dim=(-2, -1), keepdim=True) + eps)


@torch.no_grad()
def rollout_map(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Image-sized rollout maps (B, S, S) in [0, 1] of a pacx VisionTransformer for images (B, 3, S, S)."""
    model.eval()
    _, attns = model.forward_features(x, return_attn=True)
    return upsample_minmax(attention_rollout(attns, model.num_prefix_tokens), x.shape[-1])


def rollout_input(image: torch.Tensor, size: int, imagenet_norm: bool = False) -> torch.Tensor:
    """uint8 (3, H, W) -> float (3, S, S): [0, 1] pixels (reference quirk) or ImageNet-normalised."""
    image = TF.resize(image, [size, size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return normalize(image) if imagenet_norm else image.float() / 255.0


def _heat_rgb(v: np.ndarray) -> np.ndarray:
    """[0, 1] -> a black-red-yellow-white ramp, (S, S, 3) in [0, 1]."""
    return np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)


def overlay(gray: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Gray image (S, S) in [0, 1] with a [0, 1] heat map blended over it -> uint8 (S, S, 3)."""
    rgb = (1 - alpha) * gray[..., None] + alpha * _heat_rgb(heat)
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def difference_rgb(diff: np.ndarray) -> np.ndarray:
    """A signed difference map (S, S) -> uint8 (S, S, 3): blue where negative, red where positive, scaled by its
    largest magnitude (white = no difference)."""
    d = diff / (np.abs(diff).max() + 1e-6)
    rgb = np.stack([1 - np.clip(-d, 0, 1), 1 - np.abs(d), 1 - np.clip(d, 0, 1)], axis=-1)
    return (rgb * 255).round().astype(np.uint8)


def save_row(path, tiles: list[np.ndarray], gap: int = 4) -> None:
    """Save uint8 (S, S, 3) tiles side by side, separated by white gaps, as a PNG."""
    S = tiles[0].shape[0]
    row = np.full((S, len(tiles) * (S + gap) - gap, 3), 255, dtype=np.uint8)
    for k, tile in enumerate(tiles):
        row[:, k * (S + gap):k * (S + gap) + S] = tile
    Image.fromarray(row).save(path)


def save_rollout_figures(folder, images: list[torch.Tensor], maps: dict[str, torch.Tensor], ref: str) -> list[str]:
    """One PNG per image in `folder`: the image, each backbone's rollout over it, then each backbone's map minus the
    reference's. `maps[name]` (B, S, S) in [0, 1], in `images` order."""
    folder.mkdir(exist_ok=True)
    names = list(maps)
    S = maps[ref].shape[-1]
    files = []
    for i, image in enumerate(images):
        gray = rollout_input(image, S).mean(0).numpy()  # (S, S) in [0, 1]
        heat = {n: upsample_minmax(maps[n][i:i + 1], S)[0].numpy() for n in names}
        tiles = [overlay(gray, np.zeros_like(gray), 0.0)] + [overlay(gray, heat[n]) for n in names]
        tiles += [difference_rgb(heat[n] - heat[ref]) for n in names if n != ref]
        files.append(str(folder / f"{i:03d}.png"))
        save_row(files[-1], tiles)
    return files
