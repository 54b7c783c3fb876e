"""A built-in synthetic physiology world in which every pacx stage runs without credentialed data.

PaCX-MAE's claim (METHOD.md "Reported results") is that physiology which is strong in the ECG and the labs but only
weak in the chest X-ray can be distilled into the CXR encoder. Nobody can run the method on MIMIC without
PhysioNet credentials, so this module builds a small world where that claim can be seen, deterministic by seed,
and writes it in the real file formats of METHOD.md "Data formats users have". No reference code.

The world shares physiology between modalities the way patients do: every latent factor that shows in the image
also leaves a trace in the ECG and/or the labs, and the factors behind the "physiology-dense" labels (fluid
overload, hyperkalaemia, renal failure) are strong in the ECG / labs and weak (or absent) in the image. How much
each modality explains of each factor and each label is measured, on the validation split, by `pacx.world.oracle`.

Latent factors: standard-normal z-scores drawn as a linear structural model; each factor is a weighted sum of its
parents plus its own noise e, the noise scaled so that the factor has variance exactly 1 (`_FACTORS`):
  age_z         age                        = e                           (age = clip(64 + 15 age_z, 18, 95) years)
  habitus       body size                  = e
  cardiac       cardiac enlargement / HF   = 0.35 age_z + 0.94 e
  renal         renal dysfunction          = 0.30 age_z + 0.30 cardiac + 0.87 e        (cardiorenal coupling)
  inflammation  systemic inflammation      = e
  fluid         fluid overload             = 0.40 cardiac + 0.30 renal + 0.20 inflammation + 0.78 e
  (corr(fluid, cardiac) = 0.52, corr(fluid, renal) = 0.46, corr(cardiac, renal) = 0.41)
Quantities (each e a fresh standard normal):
  ctr           cardiothoracic ratio       = 0.45 + 0.06 cardiac                        (ICU-like spread)
  creatinine    mg/dL                      = 0.9 exp(0.5 renal + 0.15 habitus)          (muscle mass)
  potassium     mmol/L                     = 4.4 + 0.4 renal + 0.3 e
  heart_rate    bpm                        = 76 + 7 inflammation + 5 fluid + 7 e (clipped to 45-150)
  effusion      pleural fluid amount       = max(0, fluid + 0.5 e - 1)
  congestion    perihilar haze severity    = max(0, fluid + 0.5 e - 0.5)
  consolidation pneumonic opacity extent   = max(0, inflammation + 0.6 e - 1)          (~20% of patients)
Where each factor shows (effect sizes in the modules named; image units: lung fields ~0.1, soft tissue ~0.4):
  factor        CXR (world/cxr.py)                     ECG (world/ecg.py)                labs (world/labs.py)
  cardiac       heart width = ctr, height ~ sqrt(ctr)  QRS voltage x exp(0.22 z),        RDW +0.6, sodium -0.4, urea
                                                       QRS +6 ms per z above 0           +0.4, hematocrit -0.4 (x SD)
  fluid         hilar vessels x (1 + 0.05 z), haze     P wave +0.035 mV and +3 ms per z, sodium -0.8, albumin -0.7,
                0.02 per unit congestion, effusion     QRS voltage x exp(-0.06 z),        hematocrit -0.5, chloride
                0.12 opacity at the bases (weak)       rate +5 bpm per z                  -0.5, INR +0.4, ... (strong)
  renal         none                                   potassium: peaked T, wide QRS     creatinine, urea, phosphate,
                                                                                         bicarbonate, ... (strong)
  inflammation  consolidation: a 0.12-per-unit opacity rate +7 bpm per z                  WBC, neutrophils, lactate,
                in one of four lung zones (weak)                                         glucose, ... (strong)
  age_z         aortic knob radius 0.045 + 0.008 z,    PR interval +12 ms per z          albumin -0.2, hematocrit
                brightness +0.03 z (weak)                                                -0.2, renal via age
  habitus       soft-tissue outline x (1 + 0.07 z)     QRS axis -8 degrees per z (+-4),  creatinine exp(0.15 z)
                                                       all voltages x exp(-0.1 z)        (muscle mass), glucose
                                                                                         +0.4, ALT +0.4, AST +0.25
Acquisition nuisance (no physiology, strong): brightness, contrast, gamma, exposure gradient, pixel noise, position,
rotation, field of view; in the ECG baseline wander, mains hum, noise and a per-record voltage factor exp(0.1 e).
Labels (0/1), thresholds on the latent state: fluid_overload (fluid > 0.6, ~27%), cardiomegaly (ctr > 0.5),
effusion (effusion > 0), congestion (congestion > 0), hyperkalemia (potassium > 5.0), renal_failure
(creatinine > 1.8).

How the effect sizes were chosen, and frozen: on the VALIDATION split only (2,000 / 750 patients, seed 0), with
linear models from the raw pixels and from the teachers' embeddings (`pacx.world.oracle`), before any test number
was read. Four drafts were compared: hilar vessels at x (1 + 0.25 z) made fluid as visible in the pixels as in the
labs (pixel R^2 0.74), so 0.05 (R^2 0.44, mostly through the heart size fluid correlates with); consolidation
opacity 0.06 left inflammation invisible, 0.12 weak (R^2 0.03); habitus drawn as the whole body's scale was erased
by Stage 2's crop and scale augmentation, and an ECG effect on overall voltage by ECGFounder's per-record z-score,
so habitus became the soft-tissue outline around fixed lungs (a ratio the augmentation keeps) and the QRS axis (a
shape the z-score keeps). With the values above Stage 2 learns from both teachers; with habitus as body scale it
stayed at chance (lr 8e-4) or learned late and weakly (lr 3e-3). The values are now fixed;
tests/test_world_teachers.py checks the factor model and tests/test_synthetic.py each drawn effect.

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
    habitus: np.ndarray
    consolidation: np.ndarray


# The factor model of the module docstring: factor -> {parent: coefficient}, in drawing order. Each factor's own
# noise is scaled to make its variance exactly 1 (`_unit_variance_loadings`).
_FACTORS = {
    "age_z": {},
    "habitus": {},
    "cardiac": {"age_z": 0.35},
    "renal": {"age_z": 0.30, "cardiac": 0.30},
    "inflammation": {},
    "fluid": {"cardiac": 0.40, "renal": 0.30, "inflammation": 0.20},
}


def _unit_variance_loadings() -> dict[str, np.ndarray]:
    """Each factor as loadings on the independent noises (one per factor): parents' loadings times their
    coefficients, plus the factor's own noise with weight sqrt(1 - variance of the parents' part)."""
    k = len(_FACTORS)
    loadings = {}
    for i, (name, parents) in enumerate(_FACTORS.items()):
        mix = sum((c * loadings[p] for p, c in parents.items()), np.zeros(k))
        own = np.sqrt(1.0 - mix @ mix)
        loadings[name] = mix + own * np.eye(k)[i]
    return loadings


def factor_correlations() -> dict[tuple[str, str], float]:
    """corr(a, b) of every pair of latent factors, exactly (the factors have unit variance)."""
    load = _unit_variance_loadings()
    names = list(load)
    return {(a, b): float(load[a] @ load[b]) for i, a in enumerate(names) for b in names[i + 1:]}


def sample_physiology(n: int, rng: np.random.Generator) -> Physiology:
    load = _unit_variance_loadings()
    noise = rng.standard_normal((len(load), n))  # (factors, N): the independent noises
    z = {name: w @ noise for name, w in load.items()}  # unit-variance factors
    e = lambda: rng.standard_normal(n)
    age = np.clip(64.0 + 15.0 * z["age_z"], 18.0, 95.0)
    fluid, renal, inflammation = z["fluid"], z["renal"], z["inflammation"]
    return Physiology(
        age=age, renal=renal, cardiac=z["cardiac"], inflammation=inflammation, fluid=fluid,
        ctr=0.45 + 0.06 * z["cardiac"],
        creatinine=0.9 * np.exp(0.5 * renal + 0.15 * z["habitus"]),
        potassium=4.4 + 0.4 * renal + 0.3 * e(),
        heart_rate=np.clip(76.0 + 7.0 * inflammation + 5.0 * fluid + 7.0 * e(), 45.0, 150.0),
        effusion=np.maximum(0.0, fluid + 0.5 * e() - 1.0),
        congestion=np.maximum(0.0, fluid + 0.5 * e() - 0.5),
        habitus=z["habitus"],
        consolidation=np.maximum(0.0, inflammation + 0.6 * e() - 1.0),
    )


def age_z(p: Physiology) -> np.ndarray:
    return (p.age - 64.0) / 15.0


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
    ecg_params: dict[str, np.ndarray]  # pacx.world.ecg waveform parameters per record (the ECG teacher's findings)


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
    """Waveform parameters of pacx.world.ecg from the state (effect sizes: module docstring). `voltage` scales all
    deflections: body habitus (larger body, lower voltage) times a per-record nuisance (electrode placement)."""
    n = len(p.age)
    voltage = np.exp(-0.1 * p.habitus + 0.1 * rng.standard_normal(n))
    k_high = np.maximum(p.potassium - 4.5, 0.0)
    return {
        "heart_rate": p.heart_rate,
        "qrs_width": 0.088 + 0.02 * np.maximum(p.potassium - 5.0, 0.0) + 0.006 * np.maximum(p.cardiac, 0.0)
                     + 0.004 * rng.standard_normal(n),
        "r_amp": 1.3 * np.exp(0.22 * p.cardiac - 0.06 * p.fluid) * voltage,
        "t_amp": (0.25 + 0.5 * k_high + 0.05 * rng.standard_normal(n)) * voltage,
        "t_width": 0.055 / (1.0 + 0.6 * k_high),
        "p_amp": np.maximum(0.12 + 0.035 * p.fluid + 0.02 * rng.standard_normal(n), 0.03) * voltage,
        "p_width": np.clip(0.022 + 0.003 * p.fluid + 0.0015 * rng.standard_normal(n), 0.012, 0.04),
        "pr": np.clip(0.16 + 0.012 * age_z(p) + 0.008 * rng.standard_normal(n), 0.11, 0.24),
        "axis": -8.0 * p.habitus + 4.0 * rng.standard_normal(n),
    }


def make_world(n: int, seed: int = 0, image_size: int = 224) -> World:
    """n patients with CXR, masks, ECG, labs and labels, all in memory; identical for identical arguments."""
    if n < 1:
        raise ValueError(f"make_world: n must be at least 1, got {n}")
    rng = np.random.default_rng([seed, 0])  # state, nuisances and labs; CXR/ECG noise use streams 1 and 2
    p = sample_physiology(n, rng)
    hadm_id = 20_000_000 + rng.choice(10_000_000, size=n, replace=False).astype(np.int64)
    cxr, lung, heart = render_cxr(p.ctr, p.effusion, p.congestion, sample_nuisance(n, rng), image_size, seed,
                                  fluid=p.fluid, consolidation=p.consolidation,
                                  consolidation_site=rng.integers(0, 4, n), age_z=age_z(p), habitus=p.habitus)
    ecg_params = ecg_parameters(p, rng)
    ecg = synthesize_ecg(ecg_params, seed)
    drivers = {"renal": p.renal, "fluid": p.fluid, "inflammation": p.inflammation, "cardiac": p.cardiac,
               "age": age_z(p), "habitus": p.habitus}
    labs = sample_labs(drivers, p.creatinine, p.potassium, rng)
    return World(seed=seed, hadm_id=hadm_id, physiology=p, labels=physiology_labels(p),
                 cxr=cxr, lung_mask=lung, heart_mask=heart, ecg=ecg, labs=labs, ecg_params=ecg_params)
