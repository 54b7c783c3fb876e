"""Synthetic chest X-rays for the built-in world: a PA-like grayscale radiograph with its lung and heart masks.

Part of the synthetic world described in `pacx/world/physiology.py`; the images stand in for MIMIC-CXR / CheXpert
(METHOD.md "Data formats users have"). No reference code: a hand-made phantom drawn with numpy.

Geometry lives in body coordinates (x to the image right = the patient's left, as in a PA film; y downwards;
the thorax spans about [-1, 1]). Each image is the body seen through a random nuisance transform:
  pixel -> shift (dx, dy), rotate (angle), scale (body size) -> body coordinates.
Anatomy: soft-tissue thorax on black air; two dark lung fields cut below by domed hemidiaphragms (the right one
higher); mediastinum and spine (with vertebral banding) between them; ribs as curved bright bands; a heart
ellipse whose half-width is `ctr * 0.63` (0.63 = half the inner thoracic width), so its width follows the
cardiothoracic ratio. Physiology drawn WEAKLY: congestion as faint perihilar and lower-zone haze, pleural
effusion as fluid filling the lung bases from the costophrenic angles up (blunting). Nuisance drawn strongly:
brightness, contrast, gamma, an exposure gradient, pixel noise, position, rotation and body size.

Notation: B = images in a chunk, S = image side in pixels.
"""
from dataclasses import dataclass, fields

import numpy as np

LUNG_CENTER_X, LUNG_CENTER_Y, LUNG_RX, LUNG_RY = 0.36, -0.05, 0.27, 0.62
HALF_THORAX = LUNG_CENTER_X + LUNG_RX  # inner thoracic half-width: the CTR denominator is 2 * 0.63
HEART_CENTER_X, HEART_CENTER_Y, HEART_RY = 0.07, 0.28, 0.23
_EDGE = 0.012  # soft-edge width in body units (~0.4 px at S=64): outlines anti-alias instead of aliasing
# Physiology effect sizes in intensity units (lung fields ~0.1, soft tissue ~0.4): kept small against the nuisance.
EFFUSION_OPACITY = 0.12  # added density of pleural fluid over the aerated lung base
CONGESTION_HAZE = 0.02  # peak haze per unit of congestion severity
_CHUNK = 256  # images rendered at once: bounds memory at S = 224
_STREAM = 1  # random-stream tag: keeps pixel noise independent of the ECG noise drawn from the same seed


@dataclass
class CxrNuisance:
    """Per-image acquisition variation that carries no physiology; each field (N,)."""
    shift_x: np.ndarray
    shift_y: np.ndarray
    angle: np.ndarray  # radians
    body_scale: np.ndarray
    brightness: np.ndarray
    contrast: np.ndarray
    gamma: np.ndarray
    gradient: np.ndarray  # left-right exposure gradient
    noise_sd: np.ndarray


def sample_nuisance(n: int, rng: np.random.Generator) -> CxrNuisance:
    return CxrNuisance(
        shift_x=rng.uniform(-0.1, 0.1, n),
        shift_y=rng.uniform(-0.1, 0.1, n),
        angle=np.deg2rad(rng.uniform(-7.0, 7.0, n)),
        body_scale=rng.uniform(0.82, 1.02, n),
        brightness=rng.normal(0.0, 0.07, n),
        contrast=rng.uniform(0.75, 1.25, n),
        gamma=rng.uniform(0.8, 1.25, n),
        gradient=rng.normal(0.0, 0.05, n),
        noise_sd=rng.uniform(0.01, 0.04, n),
    )


def _inside(d: np.ndarray) -> np.ndarray:
    """Soft indicator of d < 0 for an approximate signed distance d (body units), smooth over about _EDGE."""
    return 1.0 / (1.0 + np.exp(np.clip(d / _EDGE, -50.0, 50.0)))


def _ellipse_distance(x, y, cx, cy, rx, ry):
    """Approximate signed distance to an ellipse: (normalised radius - 1) x the mean radius."""
    return (np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2) - 1.0) * 0.5 * (rx + ry)


def _draw_chunk(ctr, effusion, congestion, nz: CxrNuisance, size: int, rng: np.random.Generator):
    """Render one chunk: float image (B, S, S) in [0, 1], lung mask, heart mask (B, S, S) uint8 0/1."""
    col = lambda a: np.asarray(a, dtype=np.float32)[:, None, None]  # (B,) -> (B, 1, 1)
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0  # pixel centres in [-1, 1]
    px, py = grid[None, None, :], grid[None, :, None]  # (1, 1, S) columns, (1, S, 1) rows
    cos, sin, scale = col(np.cos(nz.angle)), col(np.sin(nz.angle)), col(nz.body_scale)
    x = (cos * (px - col(nz.shift_x)) + sin * (py - col(nz.shift_y))) / scale  # (B, S, S) body coordinates
    y = (-sin * (px - col(nz.shift_x)) + cos * (py - col(nz.shift_y))) / scale
    ax = np.abs(x)  # the two sides mirror each other

    body = _inside(_ellipse_distance(x, y, 0.0, 0.1, 0.95, 1.15))
    # Hemidiaphragm domes: lowest at the costophrenic angle (lateral); the right one (image left) sits higher.
    dome = 0.42 + 0.16 * ((ax - LUNG_CENTER_X) / LUNG_RX) ** 2 - 0.04 * (x < 0)
    lungs = _inside(_ellipse_distance(ax, y, LUNG_CENTER_X, LUNG_CENTER_Y, LUNG_RX, LUNG_RY)) * _inside(y - dome)
    heart = _inside(_ellipse_distance(x, y, HEART_CENTER_X, HEART_CENTER_Y, HALF_THORAX * col(ctr), HEART_RY))
    aerated = lungs * (1.0 - heart)

    # Effusion fills the lung base up from the dome, higher laterally (the meniscus that blunts the angle).
    fluid_height = col(np.where(effusion > 0, 0.02 + 0.04 * effusion, 0.0)) * (0.4 + 1.2 * ax / HALF_THORAX)
    effused = aerated * _inside(dome - fluid_height - y) * (fluid_height > 0)
    haze = col(CONGESTION_HAZE * congestion) * (np.exp(-((ax - 0.2) ** 2 + y ** 2) / 0.05)
                                      + 0.7 * np.exp(-((ax - 0.35) ** 2 + (y - 0.3) ** 2) / 0.045))
    ribs = 0.07 * np.clip(np.cos(2 * np.pi * (y + 0.35 * ax ** 2) / 0.17), 0.0, 1.0) ** 3
    spine = _inside(ax - 0.055) * (0.14 + 0.04 * np.cos(2 * np.pi * y / 0.13))
    mediastinum = _inside(ax - 0.1 - 0.05 * np.clip(y, 0.0, None)) * 0.12

    dense = 0.36 + 0.06 * (1.0 - y) / 2.0 + ribs + spine + mediastinum + 0.12 * heart  # soft tissue, bone, heart
    lung_dark = 0.1 + 0.08 * np.exp(-((ax - 0.18) ** 2 + y ** 2) / 0.03) + 0.6 * ribs  # vessels near the hila
    img = dense * (1.0 - aerated) + (lung_dark + haze) * aerated
    img = img + effused * EFFUSION_OPACITY
    img = 0.04 + body * (img - 0.04)  # air outside the body is nearly black

    img = np.clip(img, 0.0, 1.0) ** col(nz.gamma)
    img = (img - 0.4) * col(nz.contrast) + 0.4 + col(nz.brightness) + col(nz.gradient) * px
    img = img + col(nz.noise_sd) * rng.standard_normal(img.shape, dtype=np.float32)
    lung_mask = (lungs > 0.5) & (heart <= 0.5)
    return np.clip(img, 0.0, 1.0), lung_mask.astype(np.uint8), (heart > 0.5).astype(np.uint8)


def render_cxr(ctr: np.ndarray, effusion: np.ndarray, congestion: np.ndarray, nuisance: CxrNuisance,
               size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images (N, S, S) uint8, lung masks and heart masks (N, S, S) uint8 in {0, 1}.

    ctr: cardiothoracic ratio; effusion: effusion amount (0 = none); congestion: haze severity (0 = none); each (N,).
    The pixel noise of chunk k comes from default_rng([seed, 1, k]), so the output depends only on the inputs.
    """
    if size < 16:
        raise ValueError(f"synthetic_cxr: image size must be at least 16 pixels, got {size}")
    n = len(ctr)
    images = np.empty((n, size, size), dtype=np.uint8)
    lung_masks = np.empty_like(images)
    heart_masks = np.empty_like(images)
    for k, start in enumerate(range(0, n, _CHUNK)):
        sl = slice(start, start + _CHUNK)
        nz = CxrNuisance(**{f.name: getattr(nuisance, f.name)[sl] for f in fields(CxrNuisance)})
        img, lung, heart = _draw_chunk(ctr[sl], effusion[sl], congestion[sl], nz, size,
                                       np.random.default_rng([seed, _STREAM, k]))
        images[sl] = np.round(img * 255.0).astype(np.uint8)
        lung_masks[sl], heart_masks[sl] = lung, heart
    return images, lung_masks, heart_masks
