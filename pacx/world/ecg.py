"""Synthetic 12-lead ECGs for the built-in world: 10 s at 500 Hz in mV, limb leads obeying Einthoven's law.

Part of the synthetic world described in `pacx/world/physiology.py`; the records stand in for MIMIC-IV-ECG
(METHOD.md "Stage 1c": 12 x 5000, lead order I, II, III, aVR, aVL, aVF, V1-V6). No reference code: a dipole
(vectorcardiogram) model.

The heart is one electric dipole H(t) in body axes (x = patient's left, y = inferior, z = anterior). One beat is
a sum of Gaussian lobes, each with a direction and an amplitude: P wave, septal q, main R, terminal S, T wave.
The beat template repeats at the patient's heart rate with 3% beat-to-beat jitter. Physiology in the waveform:
  - rate: the state's heart rate; QT follows Bazett (QT = 0.40 s x sqrt(RR));
  - QRS voltage grows with cardiac size (left-ventricular hypertrophy), times a body-habitus nuisance factor;
  - potassium above 4.5 mmol/L gives tall, narrow (peaked) T waves, above 5 it widens the QRS;
  - fluid overload stretches the atria: taller, wider P waves;
  - the PR interval (P-wave centre to R peak) lengthens with age (conduction slowing);
  - body habitus turns the QRS axis leftwards in the frontal plane (a horizontal heart), which, unlike the overall
    voltage, survives ECGFounder's per-record z-score.
Effect sizes (the parameters come from `pacx.world.physiology.ecg_parameters`): rate 76 bpm + 7 per SD of inflammation
+ 5 per SD of fluid; R amplitude 1.3 mV x exp(0.22 cardiac - 0.06 fluid) x exp(-0.1 habitus) x exp(0.1 e);
QRS 88 ms + 20 ms per mmol/L potassium above 5 + 6 ms per SD of cardiac above 0; T amplitude 0.25 mV + 0.5 mV per
mmol/L potassium above 4.5, T width 55 ms / (1 + 0.6 (K - 4.5)+); P amplitude 0.12 mV + 0.035 mV per SD of fluid,
P width 22 ms + 3 ms per SD of fluid; PR 160 ms + 12 ms per SD of age; QRS axis rotated by -8 degrees per SD of
habitus (sd of the noise terms: `pacx.world.physiology`).
Leads are projections of H: lead I on x, lead II on the +60 degree frontal axis, V1-V6 on horizontal-plane
directions from right-anterior (V1) to left-lateral (V6). Noise (baseline wander, mains hum, white noise) is
added to I, II and each V lead; III, aVR, aVL, aVF are then computed from the noisy I and II, so
III = II - I, aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2 hold exactly.

Notation: B = records in a chunk, T = template samples, L = 5000 samples.
"""
import numpy as np
from scipy.signal import fftconvolve

LEAD_NAMES = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
FS = 500  # Hz
SECONDS = 10
_PRE = 0.35  # seconds of template before the R peak (room for the P wave at the longest PR)
_TEMPLATE = 1.0  # seconds of template in all (room for the T wave at 45 bpm)
_CHUNK = 128
_STREAM = 2  # random-stream tag: keeps ECG noise independent of the pixel noise drawn from the same seed

# Unit directions (x, y, z) of the lobes, before normalisation.
_DIRECTION = {
    "p": (0.5, 0.85, 0.15),
    "q": (-0.6, 0.2, 0.75),  # septal depolarisation: rightward and anterior
    "r": (0.62, 0.72, -0.3),  # main left-ventricular mass: leftward, inferior, posterior
    "s": (-0.3, -0.4, -0.85),  # terminal basal activation
    "t": (0.6, 0.75, 0.2),  # concordant with R
}
# Precordial electrode directions in the horizontal plane, degrees from +x towards +z (anterior).
_PRECORDIAL_DEG = (120.0, 95.0, 75.0, 60.0, 30.0, 0.0)
_PRECORDIAL_GAIN = 1.5  # chest electrodes sit close to the heart: larger deflections than limb leads


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _beat_template(heart_rate, qrs_width, r_amp, t_amp, t_width, p_amp, p_width, pr=0.16, axis=0.0) -> np.ndarray:
    """One beat of the dipole per record: (B, 3, T) mV, R peak at sample _PRE * FS. Inputs are (B,) arrays."""
    tau = np.arange(int(_TEMPLATE * FS)) / FS - _PRE  # (T,) seconds from the R peak
    qt = 0.40 * np.sqrt(60.0 / heart_rate)  # Bazett at QTc 400 ms
    w = qrs_width / 0.09  # lobe widths and offsets stretch with the QRS duration
    lobes = (  # (name, amplitude, centre s, width s), each (B,) or scalar
        ("p", p_amp, -np.asarray(pr, np.float64), p_width),
        ("q", 0.15 * r_amp, -0.022 * w, 0.008 * w),
        ("r", r_amp, 0.0, 0.011 * w),
        ("s", 0.35 * r_amp, 0.026 * w, 0.009 * w),
        ("t", t_amp, qt - 0.11, t_width),
    )
    h = 0.0
    for name, amp, centre, width in lobes:
        amp, centre, width = (np.broadcast_to(np.asarray(a, np.float64), heart_rate.shape)[:, None]
                              for a in (amp, centre, width))  # (B, 1)
        shape = amp * np.exp(-0.5 * ((tau[None, :] - centre) / width) ** 2)  # (B, T)
        d = np.broadcast_to(_unit(_DIRECTION[name]), (len(heart_rate), 3))  # (B, 3)
        if name in ("q", "r", "s"):  # QRS axis: rotate in the frontal (x, y) plane, + towards inferior
            theta = np.deg2rad(np.broadcast_to(np.asarray(axis, np.float64), heart_rate.shape))
            c, s = np.cos(theta), np.sin(theta)
            d = np.stack([c * d[:, 0] - s * d[:, 1], s * d[:, 0] + c * d[:, 1], d[:, 2]], axis=1)
        h = h + shape[:, None, :] * d[:, :, None]  # (B, 3, T)
    return h


def _noise(shape, rng: np.random.Generator) -> np.ndarray:
    """Baseline wander (two slow sinusoids), 60 Hz mains hum and white noise, mV. shape = (B, K, L)."""
    t = np.arange(shape[-1]) / FS
    out = 0.01 * rng.standard_normal(shape)
    for _ in range(2):
        f = rng.uniform(0.05, 0.5, shape[:-1] + (1,))
        a = rng.uniform(0.02, 0.12, shape[:-1] + (1,))
        out += a * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi, shape[:-1] + (1,)))
    out += rng.uniform(0.0, 0.01, shape[:-1] + (1,)) * np.sin(2 * np.pi * 60.0 * t
                                                               + rng.uniform(0, 2 * np.pi, shape[:-1] + (1,)))
    return out


def _dipole_chunk(params: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """The dipole over 10 s: (B, 3, L). Beats are impulses at the R-peak samples convolved with the template."""
    n, length, t_len = len(params["heart_rate"]), SECONDS * FS, int(_TEMPLATE * FS)
    template = _beat_template(**params)  # (B, 3, T)
    rr = 60.0 / params["heart_rate"]  # (B,) seconds
    n_beats = int(np.ceil(SECONDS / rr.min())) + 3
    jitter = 1.0 + 0.03 * rng.standard_normal((n, n_beats))
    # First R peak anywhere in [-RR, 0) s so the record starts mid-rhythm; later peaks follow with jittered RR.
    first = -rng.uniform(0.0, 1.0, n) * rr
    peaks = first[:, None] + np.cumsum(rr[:, None] * jitter, axis=1) - rr[:, None] * jitter[:, :1]  # (B, n_beats)
    pad = t_len  # impulses before t = 0 land in this left margin
    idx = np.round((peaks - _PRE) * FS).astype(np.int64) + pad  # template start sample of each beat
    keep = (idx >= 0) & (idx < pad + length)
    impulses = np.zeros((n, pad + length))
    rows = np.broadcast_to(np.arange(n)[:, None], idx.shape)
    impulses[rows[keep], idx[keep]] = 1.0
    full = fftconvolve(impulses[:, None, :], template, axes=-1)  # (B, 3, pad + L + T - 1)
    return full[:, :, pad:pad + length]


def synthesize_ecg(params: dict[str, np.ndarray], seed: int) -> np.ndarray:
    """ECGs (N, 12, 5000) float32 in mV, lead order LEAD_NAMES.

    params: per-record (N,) arrays: heart_rate (bpm), qrs_width (s), r_amp (mV), t_amp (mV), t_width (s),
    p_amp (mV), p_width (s) and optionally pr (s, P-wave centre before the R peak; default 0.16) and axis (degrees,
    frontal-plane rotation of the QRS, + towards inferior; default 0). Chunk k draws its rhythm and noise from
    default_rng([seed, 2, k]).
    """
    n = len(params["heart_rate"])
    if np.any((params["heart_rate"] < 30) | (params["heart_rate"] > 220)):
        raise ValueError("world ECG: heart_rate must lie in [30, 220] bpm")
    frontal_ii = np.array([np.cos(np.pi / 3), np.sin(np.pi / 3), 0.0])
    precordial = np.stack([_PRECORDIAL_GAIN * np.array([np.cos(a), 0.1, np.sin(a)])
                           for a in np.deg2rad(_PRECORDIAL_DEG)])  # (6, 3)
    out = np.empty((n, 12, SECONDS * FS), dtype=np.float32)
    for k, start in enumerate(range(0, n, _CHUNK)):
        rng = np.random.default_rng([seed, _STREAM, k])
        chunk = {name: np.asarray(v[start:start + _CHUNK], dtype=np.float64) for name, v in params.items()}
        h = _dipole_chunk(chunk, rng)  # (B, 3, L)
        lead_i = h[:, 0] + _noise(h[:, 0].shape, rng)  # (B, L)
        lead_ii = np.einsum("c,bcl->bl", frontal_ii, h) + _noise(h[:, 0].shape, rng)
        chest = np.einsum("vc,bcl->bvl", precordial, h)  # (B, 6, L)
        chest += _noise(chest.shape, rng)
        limb = np.stack([lead_i, lead_ii, lead_ii - lead_i, -(lead_i + lead_ii) / 2,
                         lead_i - lead_ii / 2, lead_ii - lead_i / 2], axis=1)  # (B, 6, L) Einthoven/Goldberger
        out[start:start + _CHUNK] = np.concatenate([limb, chest], axis=1)  # (B, 12, L)
    return out
