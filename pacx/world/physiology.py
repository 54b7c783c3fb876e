"""A built-in synthetic physiology world in which every pacx stage runs without credentialed data.

PaCX-MAE's claim (METHOD.md "Reported results") is that physiology which is strong in the ECG and the labs but only
weak in the chest X-ray can be distilled into the CXR encoder. Nobody can run the method on MIMIC without
PhysioNet credentials, so this module builds a small world where that claim can be seen, deterministic by seed,
and writes it in the real file formats of METHOD.md "Data formats users have". No reference code.

The world. Each patient has latent z-scores (N(0, 1)-like, drawn correlated) and physical quantities:
  age           years, 64 +- 15 (clipped to 18-95)
  renal         renal dysfunction z      = 0.35 age_z + 0.94 e
  cardiac       cardiac enlargement z    = 0.3 age_z + 0.3 renal + 0.9 e
  inflammation  systemic inflammation z  = e
  fluid         fluid overload z         = 0.35 cardiac + 0.45 renal + 0.15 inflammation + 0.75 e
  ctr           cardiothoracic ratio     = 0.46 + 0.045 cardiac
  creatinine    mg/dL                    = 0.9 exp(0.5 renal)
  potassium     mmol/L                   = 4.4 + 0.4 renal + 0.3 e
  heart_rate    bpm                      = 76 + 6 inflammation + 6 fluid + 8 e (clipped to 45-150)
  effusion      pleural fluid amount     = max(0, fluid + 0.5 e - 1)
  congestion    perihilar haze severity  = max(0, fluid + 0.5 e - 0.5)
(each e is a fresh standard normal). Where the physiology shows:
  CXR  (synthetic_cxr.py)  heart width follows ctr (clear); effusion and congestion are drawn weakly under
                           strong nuisance (brightness, contrast, gamma, noise, shift, rotation, body size).
  ECG  (synthetic_ecg.py)  rate, QRS voltage (cardiac), peaked T and wide QRS (potassium), P waves (fluid).
  labs (synthetic_labs.py) creatinine, urea, phosphate, bicarbonate (renal); sodium, hematocrit, albumin,
                           chloride, INR, RDW (fluid); WBC, neutrophils, lactate, glucose (inflammation);
                           the rest noise; panel-wise missingness, more tests in sicker patients.
Labels (0/1), thresholds on the latent state: fluid_overload (fluid > 0.6, ~28%), cardiomegaly (ctr > 0.5),
effusion (effusion > 0), congestion (congestion > 0), hyperkalemia (potassium > 5.0), renal_failure
(creatinine > 1.8). So fluid_overload is easy from labs/ECG and hard from pixels at small n.

Notation: N = patients, S = image side, L = 50 labs.
"""
from dataclasses import dataclass

import numpy as np

from pacx.world.cxr import render_cxr, sample_nuisance
from pacx.world.ecg import synthesize_ecg
from pacx.world.labs import sample_labs

LABEL_NAMES = ("fluid_overload", "cardiomegaly", "effusion", "congestion", "hyperkalemia", "renal_failure")


@dataclass
class Physiology:
    """Latent state per patient, each field (N,); see the module docstring for how they are drawn."""
    age: np.ndarray
    renal: np.ndarray
    cardiac: np.ndarray
    inflammation: np.ndarray
    fluid: np.ndarray
    ctr: np.ndarray
    creatinine: np.ndarray
    potassium: np.ndarray
    heart_rate: np.ndarray
    effusion: np.ndarray
    congestion: np.ndarray


@dataclass
class World:
    seed: int
    hadm_id: np.ndarray  # (N,) int64, unique
    physiology: Physiology
    labels: dict[str, np.ndarray]  # name -> (N,) int64 in {0, 1}
    cxr: np.ndarray  # (N, S, S) uint8
    lung_mask: np.ndarray  # (N, S, S) uint8 in {0, 1}
    heart_mask: np.ndarray  # (N, S, S) uint8 in {0, 1}
    ecg: np.ndarray  # (N, 12, 5000) float32 mV, LEAD_NAMES order
    labs: np.ndarray  # (N, L) float64 raw values, NaN = not measured


def sample_physiology(n: int, rng: np.random.Generator) -> Physiology:
    e = lambda: rng.standard_normal(n)
    age = np.clip(64.0 + 15.0 * e(), 18.0, 95.0)
    age_z = (age - 64.0) / 15.0
    renal = 0.35 * age_z + 0.94 * e()
    cardiac = 0.3 * age_z + 0.3 * renal + 0.9 * e()
    inflammation = e()
    fluid = 0.35 * cardiac + 0.45 * renal + 0.15 * inflammation + 0.75 * e()
    return Physiology(
        age=age, renal=renal, cardiac=cardiac, inflammation=inflammation, fluid=fluid,
        ctr=0.46 + 0.045 * cardiac,
        creatinine=0.9 * np.exp(0.5 * renal),
        potassium=4.4 + 0.4 * renal + 0.3 * e(),
        heart_rate=np.clip(76.0 + 6.0 * inflammation + 6.0 * fluid + 8.0 * e(), 45.0, 150.0),
        effusion=np.maximum(0.0, fluid + 0.5 * e() - 1.0),
        congestion=np.maximum(0.0, fluid + 0.5 * e() - 0.5),
    )


def physiology_labels(p: Physiology) -> dict[str, np.ndarray]:
    rules = {
        "fluid_overload": p.fluid > 0.6,
        "cardiomegaly": p.ctr > 0.5,
        "effusion": p.effusion > 0,
        "congestion": p.congestion > 0,
        "hyperkalemia": p.potassium > 5.0,
        "renal_failure": p.creatinine > 1.8,
    }
    return {name: rules[name].astype(np.int64) for name in LABEL_NAMES}


def ecg_parameters(p: Physiology, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Waveform parameters of synthetic_ecg from the state; `habitus` scales all voltages (body size, no physiology)."""
    n = len(p.age)
    habitus = np.exp(0.15 * rng.standard_normal(n))
    k_high = np.maximum(p.potassium - 4.5, 0.0)
    return {
        "heart_rate": p.heart_rate,
        "qrs_width": 0.088 + 0.02 * np.maximum(p.potassium - 5.0, 0.0) + 0.005 * np.maximum(p.cardiac, 0.0)
                     + 0.004 * rng.standard_normal(n),
        "r_amp": 1.3 * np.exp(0.22 * p.cardiac) * habitus,
        "t_amp": (0.25 + 0.5 * k_high + 0.05 * rng.standard_normal(n)) * habitus,
        "t_width": 0.055 / (1.0 + 0.6 * k_high),
        "p_amp": np.maximum(0.12 + 0.035 * p.fluid + 0.02 * rng.standard_normal(n), 0.03) * habitus,
        "p_width": np.clip(0.022 + 0.003 * p.fluid, 0.012, 0.04),
    }


def make_world(n: int, seed: int = 0, image_size: int = 224) -> World:
    """n patients with CXR, masks, ECG, labs and labels, all in memory; identical for identical arguments."""
    if n < 1:
        raise ValueError(f"synthetic.make_world: n must be at least 1, got {n}")
    rng = np.random.default_rng([seed, 0])  # state, nuisances and labs; CXR/ECG noise use streams 1 and 2
    p = sample_physiology(n, rng)
    hadm_id = 20_000_000 + rng.choice(10_000_000, size=n, replace=False).astype(np.int64)
    cxr, lung, heart = render_cxr(p.ctr, p.effusion, p.congestion, sample_nuisance(n, rng), image_size, seed)
    ecg = synthesize_ecg(ecg_parameters(p, rng), seed)
    drivers = {"renal": p.renal, "fluid": p.fluid, "inflammation": p.inflammation}
    labs = sample_labs(drivers, p.creatinine, p.potassium, rng)
    return World(seed=seed, hadm_id=hadm_id, physiology=p, labels=physiology_labels(p),
                 cxr=cxr, lung_mask=lung, heart_mask=heart, ecg=ecg, labs=labs)
