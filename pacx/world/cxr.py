"""Synthetic chest X-rays for the built-in world: a PA-like grayscale radiograph with its lung and heart masks.

Part of the synthetic world described in `pacx/world/physiology.py`; the images stand in for MIMIC-CXR / CheXpert
(METHOD.md "Data formats users have"). No reference code: a hand-made phantom drawn with numpy.

Geometry lives in body coordinates (x to the image right = the patient's left, as in a PA film; y downwards;
the thorax spans about [-1, 1]). Each image is the body seen through a random nuisance transform:
  pixel -> shift (dx, dy), rotate (angle), scale (body size) -> body coordinates.
Anatomy: soft-tissue thorax on black air; two dark lung fields cut below by domed hemidiaphragms (the right one
higher); mediastinum and spine (with vertebral banding) between them; ribs as curved bright bands; a heart
ellipse whose half-width is `ctr * 0.63` (0.63 = half the inner thoracic width), so its width follows the
cardiothoracic ratio (clear: 1 SD of cardiac = 0.06 CTR = 2.1 px of heart width at S = 64 and the mean body scale),
and whose height grows as sqrt(ctr / 0.45). Body habitus widens the soft-tissue outline around unchanged lungs
(HABITUS_RIM = 7% of the body's half-width per SD; clear): a ratio, like the CTR, so it survives the scale and crop
augmentation of Stage 2, which an overall body size would not. Physiology drawn
WEAKLY (intensity units: aerated lung ~0.1, soft tissue ~0.4, nuisance brightness sd 0.07):
  - fluid: hilar vessel density 0.08 x (1 + VASCULAR_GAIN fluid), VASCULAR_GAIN = 0.05 per SD (upper-lobe
    diversion / engorged hila, continuous in the fluid z-score); congestion as faint perihilar and lower-zone haze
    (CONGESTION_HAZE = 0.02 per unit severity); pleural effusion as fluid filling the lung bases from the
    costophrenic angles up (blunting), EFFUSION_OPACITY = 0.12, height 0.02 + 0.04 x amount (body units);
  - inflammation: a consolidation, a soft Gaussian opacity (radius 0.11) of CONSOLIDATION_OPACITY = 0.12 per unit
    extent in one of four lung zones (site drawn per patient), inside the aerated lung only;
  - age: the aortic knob, a soft disc left of the upper mediastinum, radius 0.045 + 0.008 age_z (body units) and
    density 0.10 + 0.03 age_z (unfolding and calcification of the ageing aorta);
Nuisance drawn strongly: brightness, contrast, gamma, an exposure gradient, pixel noise, position, rotation and the
field of view (body scale 0.78-0.94).

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
VASCULAR_GAIN = 0.05  # relative change of hilar vessel density per SD of fluid (continuous)
CONSOLIDATION_OPACITY = 0.12  # peak added density per unit of consolidation extent
CONSOLIDATION_SITES = ((-0.36, 0.2), (0.36, 0.2), (-0.3, -0.3), (0.3, -0.3))  # (x, y): lower / upper zones
AORTA_X, AORTA_Y = 0.13, -0.36  # aortic knob centre (patient's left of the upper mediastinum)
HABITUS_RIM = 0.07  # relative change of the body outline's half-width per SD of habitus (lungs and heart unchanged)
HEART_CTR0 = 0.45  # the heart's height grows with the square root of ctr / HEART_CTR0
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
        body_scale=rng.uniform(0.78, 0.94, n),  # field of view: leaves room for the widest body habitus
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


def _draw_chunk(ctr, effusion, congestion, nz: CxrNuisance, size: int, rng: np.random.Generator,
                fluid=None, consolidation=None, site=None, age_z=None, habitus=None):
    """Render one chunk: float image (B, S, S) in [0, 1], lung mask, heart mask (B, S, S) uint8 0/1."""
    n = len(ctr)
    fluid = np.zeros(n) if fluid is None else fluid
    consolidation = np.zeros(n) if consolidation is None else consolidation
    site = np.zeros(n, np.int64) if site is None else site
    age_z = np.zeros(n) if age_z is None else age_z
    habitus = np.zeros(n) if habitus is None else habitus
    col = lambda a: np.asarray(a, dtype=np.float32)[:, None, None]  # (B,) -> (B, 1, 1)
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0  # pixel centres in [-1, 1]
    px, py = grid[None, None, :], grid[None, :, None]  # (1, 1, S) columns, (1, S, 1) rows
    cos, sin, scale = col(np.cos(nz.angle)), col(np.sin(nz.angle)), col(nz.body_scale)
    x = (cos * (px - col(nz.shift_x)) + sin * (py - col(nz.shift_y))) / scale  # (B, S, S) body coordinates
    y = (-sin * (px - col(nz.shift_x)) + cos * (py - col(nz.shift_y))) / scale
    ax = np.abs(x)  # the two sides mirror each other

    rim = col(np.clip(1.0 + HABITUS_RIM * habitus, 0.85, 1.2))  # soft-tissue outline around unchanged lungs
    body = _inside(_ellipse_distance(x, y, 0.0, 0.1, 0.95 * rim, 1.15 * (1.0 + 0.4 * (rim - 1.0))))
    # Hemidiaphragm domes: lowest at the costophrenic angle (lateral); the right one (image left) sits higher.
    dome = 0.42 + 0.16 * ((ax - LUNG_CENTER_X) / LUNG_RX) ** 2 - 0.04 * (x < 0)
    lungs = _inside(_ellipse_distance(ax, y, LUNG_CENTER_X, LUNG_CENTER_Y, LUNG_RX, LUNG_RY)) * _inside(y - dome)
    heart_ry = HEART_RY * np.sqrt(np.clip(col(ctr), 0.3, 0.75) / HEART_CTR0)  # an enlarged heart is taller too
    heart = _inside(_ellipse_distance(x, y, HEART_CENTER_X, HEART_CENTER_Y, HALF_THORAX * col(ctr), heart_ry))
    aerated = lungs * (1.0 - heart)

    # Effusion fills the lung base up from the dome, higher laterally (the meniscus that blunts the angle).
    fluid_height = col(np.where(effusion > 0, 0.02 + 0.04 * effusion, 0.0)) * (0.4 + 1.2 * ax / HALF_THORAX)
    effused = aerated * _inside(dome - fluid_height - y) * (fluid_height > 0)
    haze = col(CONGESTION_HAZE * congestion) * (np.exp(-((ax - 0.2) ** 2 + y ** 2) / 0.05)
                                      + 0.7 * np.exp(-((ax - 0.35) ** 2 + (y - 0.3) ** 2) / 0.045))
    sx, sy = (np.array(CONSOLIDATION_SITES)[site, k] for k in (0, 1))  # (B,) each
    consolidated = col(CONSOLIDATION_OPACITY * consolidation) * np.exp(-((x - col(sx)) ** 2 + (y - col(sy)) ** 2)
                                                                       / (2 * 0.11 ** 2))
    knob_r = col(np.clip(0.045 + 0.008 * age_z, 0.02, 0.08))
    knob = _inside(_ellipse_distance(x, y, AORTA_X, AORTA_Y, knob_r, knob_r)) * col(0.10 + 0.03 * age_z)
    vessels = col(np.clip(1.0 + VASCULAR_GAIN * fluid, 0.3, None))
    ribs = 0.07 * np.clip(np.cos(2 * np.pi * (y + 0.35 * ax ** 2) / 0.17), 0.0, 1.0) ** 3
    spine = _inside(ax - 0.055) * (0.14 + 0.04 * np.cos(2 * np.pi * y / 0.13))
    mediastinum = _inside(ax - 0.1 - 0.05 * np.clip(y, 0.0, None)) * 0.12

    dense = 0.36 + 0.06 * (1.0 - y) / 2.0 + ribs + spine + mediastinum + 0.12 * heart + knob  # tissue, bone, heart
    lung_dark = 0.1 + 0.08 * vessels * np.exp(-((ax - 0.18) ** 2 + y ** 2) / 0.03) + 0.6 * ribs  # hilar vessels
    img = dense * (1.0 - aerated) + (lung_dark + haze + consolidated) * aerated
    img = img + effused * EFFUSION_OPACITY
    img = 0.04 + body * (img - 0.04)  # air outside the body is nearly black

    img = np.clip(img, 0.0, 1.0) ** col(nz.gamma)
    img = (img - 0.4) * col(nz.contrast) + 0.4 + col(nz.brightness) + col(nz.gradient) * px
    img = img + col(nz.noise_sd) * rng.standard_normal(img.shape, dtype=np.float32)
    lung_mask = (lungs > 0.5) & (heart <= 0.5)
    return np.clip(img, 0.0, 1.0), lung_mask.astype(np.uint8), (heart > 0.5).astype(np.uint8)


def render_cxr(ctr: np.ndarray, effusion: np.ndarray, congestion: np.ndarray, nuisance: CxrNuisance,
               size: int, seed: int, fluid: np.ndarray | None = None, consolidation: np.ndarray | None = None,
               consolidation_site: np.ndarray | None = None, age_z: np.ndarray | None = None,
               habitus: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images (N, S, S) uint8, lung masks and heart masks (N, S, S) uint8 in {0, 1}.

    ctr: cardiothoracic ratio; effusion: effusion amount (0 = none); congestion: haze severity (0 = none); each (N,).
    Optional (N,) inputs, each drawing nothing when None: fluid (z-score: hilar vessel density), consolidation
    (extent, 0 = none) at consolidation_site (int in 0-3, an index into CONSOLIDATION_SITES), age_z (aortic knob),
    habitus (z-score: soft-tissue outline).
    The pixel noise of chunk k comes from default_rng([seed, 1, k]), so the output depends only on the inputs.
    """
    if size < 16:
        raise ValueError(f"world CXR: image size must be at least 16 pixels, got {size}")
    n = len(ctr)
    images = np.empty((n, size, size), dtype=np.uint8)
    lung_masks = np.empty_like(images)
    heart_masks = np.empty_like(images)
    for k, start in enumerate(range(0, n, _CHUNK)):
        sl = slice(start, start + _CHUNK)
        nz = CxrNuisance(**{f.name: getattr(nuisance, f.name)[sl] for f in fields(CxrNuisance)})
        part = lambda a: None if a is None else np.asarray(a)[sl]
        img, lung, heart = _draw_chunk(ctr[sl], effusion[sl], congestion[sl], nz, size,
                                       np.random.default_rng([seed, _STREAM, k]), part(fluid),
                                       part(consolidation), part(consolidation_site), part(age_z), part(habitus))
        images[sl] = np.round(img * 255.0).astype(np.uint8)
        lung_masks[sl], heart_masks[sl] = lung, heart
    return images, lung_masks, heart_masks
