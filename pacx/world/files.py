"""A built-in synthetic physiology world in which every pacx stage runs without credentialed data.

PaCX-MAE's claim (DESIGN.md, seed 000/001) is that physiology which is strong in the ECG and the labs but only
weak in the chest X-ray can be distilled into the CXR encoder. Nobody can run the method on MIMIC without
PhysioNet credentials, so this module builds a small world where that claim can be seen, deterministic by seed,
and writes it in the real file formats of DESIGN.md "Data formats users have". No reference code.

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

Files written by `write_world(out_dir, ...)` (paths inside CSVs are relative to out_dir):
  images/{hadm_id}.png, images.csv          8-bit gray PNG; columns path, hadm_id, split, <labels>
  masks/{lung,heart}/{hadm_id}.png,         0/255 PNG masks; columns img_path, mask_path (lungs),
    segmentation.csv                        heart_mask_path, split
  labs.csv                                  hadm_id + one column per itemid ("50802", ...), empty = missing
  ecg/{hadm_id}.hea/.dat, triplets.csv      WFDB, fmt 16, 1000 adu/mV, 500 Hz, 12 named leads (formats "wfdb");
                                            columns hadm_id, split, cxr_path, ecg_path (record path, no suffix)
  data_npy/{train,val,val_retrieval,test}/  the Symile-MIMIC tensors, see `_write_npy` (the two retrieval splits
                                            only with format "retrieval")
  world.json                                seed, sizes, names, and per sample hadm_id, split, state, labels

Notation: N = patients, S = image side, L = 50 labs.
"""
import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pacx.data.ecg_io import MIMIC_ECG_LEADS
from pacx.data.labs import LAB_ITEMIDS, LabPercentiles
from pacx.world.cxr import render_cxr, sample_nuisance
from pacx.world.ecg import FS, LEAD_NAMES, synthesize_ecg
from pacx.world.labs import sample_labs

LABEL_NAMES = ("fluid_overload", "cardiomegaly", "effusion", "congestion", "hyperkalemia", "renal_failure")
FORMATS = ("images", "segmentation", "labs", "npy", "retrieval", "wfdb")
# WFDB is opt-in (slowest to write); "retrieval" adds the Symile val_retrieval / test splits (10 rows a patient).
DEFAULT_FORMATS = ("images", "segmentation", "labs", "npy", "retrieval")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RETRIEVAL_NEGATIVES = 9  # Symile-MIMIC: each query has 10 candidates, itself and 9 others from its split
_ROWS = 256  # rows converted per step when writing the large .npy arrays


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


def retrieval_rows(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symile's retrieval expansion of a split of n rows (rajesh-lab/symile `sample_negative_candidates`).

    Returns (rows, query, label), each of length n * (1 + k) with k = min(9, n - 1): first every row as its own
    query (label 1), then for query i, k other rows of the split drawn without replacement (label 0).
    `rows` indexes the split; `query` is the row whose hadm_id becomes label_hadm_id.
    """
    k = min(RETRIEVAL_NEGATIVES, n - 1)
    negatives = np.zeros((n, k), dtype=np.int64)  # (n, k) indices into the split
    for i in range(n):
        others = rng.choice(n - 1, size=k, replace=False)
        negatives[i] = others + (others >= i)  # skip the query itself
    rows = np.concatenate([np.arange(n), negatives.reshape(-1)])
    query = np.concatenate([np.arange(n), np.repeat(np.arange(n), k)])
    label = np.concatenate([np.ones(n, np.int64), np.zeros(n * k, np.int64)])
    return rows, query, label


def _write_rows(path: Path, rows: np.ndarray, shape: tuple[int, ...], convert) -> None:
    """Write convert(rows chunk) for all rows into an (len(rows), *shape) float32 .npy without holding it all."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(rows), *shape))
    for start in range(0, len(rows), _ROWS):
        out[start:start + _ROWS] = convert(rows[start:start + _ROWS])
    out.flush()
    del out


def _cxr_imagenet(world: World, rows: np.ndarray) -> np.ndarray:
    gray = world.cxr[rows].astype(np.float32)[:, None] / 255.0  # (B, 1, S, S)
    mean = np.array(IMAGENET_MEAN, np.float32)[None, :, None, None]
    std = np.array(IMAGENET_STD, np.float32)[None, :, None, None]
    return (gray - mean) / std  # (B, 3, S, S): gray copied to the three channels


def _ecg_minmax(world: World, rows: np.ndarray) -> np.ndarray:
    # Symile-MIMIC keeps MIMIC-IV-ECG's lead order (aVF before aVL), as wfdb read it: (B, 5000, 12), p_signal layout
    order = [LEAD_NAMES.index(lead) for lead in MIMIC_ECG_LEADS]
    sig = world.ecg[rows][:, order].transpose(0, 2, 1)
    lo, hi = sig.min(axis=(1, 2), keepdims=True), sig.max(axis=(1, 2), keepdims=True)
    return (2.0 * (sig - lo) / (hi - lo) - 1.0)[:, None]  # (B, 1, 5000, 12), one min/max per record


def _write_npy(root: Path, world: World, split_rows: dict[str, np.ndarray], retrieval: bool = True) -> None:
    """The Symile-MIMIC tensors (rajesh-lab/symile `process_and_save_tensors.py`) under root/{split}/.

    cxr_{s}.npy (N, 3, S, S) float32 ImageNet-normalised (S = image_size, not 320: the images are already square);
    ecg_{s}.npy (N, 1, 5000, 12) float32 min-max scaled to [-1, 1] per record; labs_percentiles_{s}.npy (N, 50)
    float32 (pacx.data.labs.LabPercentiles fitted on train; missing = mean train percentile);
    labs_missingness_{s}.npy (N, 50) int64, 1 = observed; hadm_id_{s}.npy (N,) int64. val_retrieval (from val)
    and test are the retrieval expansions of `retrieval_rows` and add label_hadm_id_{s}.npy and label_{s}.npy
    (N,) int64. As in Symile-MIMIC, the test arrays are 10x the test split (query + 9 candidates each).
    """
    # A lab never measured in a (tiny) training split has no CDF to place values on: it counts as missing in
    # every split, so LabPercentiles imputes 0.5 there instead of refusing the observed values.
    unfitted = np.isnan(world.labs[split_rows["train"]]).all(axis=0)  # (L,)
    labs = np.where(unfitted, np.nan, world.labs)  # (N, L)
    percentiles = LabPercentiles().fit(labs[split_rows["train"]])
    rng = np.random.default_rng([world.seed, 3])
    plans = {"train": (split_rows["train"], None, None), "val": (split_rows["val"], None, None)}
    for name, source in (("val_retrieval", "val"), ("test", "test")) if retrieval else ():
        base = split_rows[source]
        rows, query, label = retrieval_rows(len(base), rng) if len(base) else (base, base, base)
        plans[name] = (base[rows], base[query], label)
    for name, (rows, query, label) in plans.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        _write_rows(d / f"cxr_{name}.npy", rows, (3,) + world.cxr.shape[1:], lambda r: _cxr_imagenet(world, r))
        _write_rows(d / f"ecg_{name}.npy", rows, (1, world.ecg.shape[2], 12), lambda r: _ecg_minmax(world, r))
        pct, observed = percentiles.transform(labs[rows])
        np.save(d / f"labs_percentiles_{name}.npy", pct)
        np.save(d / f"labs_missingness_{name}.npy", observed.astype(np.int64))  # symile saves int64 flags
        np.save(d / f"hadm_id_{name}.npy", world.hadm_id[rows])
        if query is not None:
            np.save(d / f"label_hadm_id_{name}.npy", world.hadm_id[query])
            np.save(d / f"label_{name}.npy", label)


def _write_wfdb(ecg_dir: Path, world: World, rows: np.ndarray) -> None:
    import wfdb  # imported here: wfdb is slow to import and only this optional writer needs it
    for r in rows:
        wfdb.wrsamp(str(world.hadm_id[r]), fs=FS, units=["mV"] * 12, sig_name=list(LEAD_NAMES),
                    p_signal=world.ecg[r].T.astype(np.float64), fmt=["16"] * 12,
                    adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(ecg_dir),
                    comments=[f"hadm_id: {world.hadm_id[r]}", "synthetic: pacx.world.files"])


def write_world(out_dir, n_train: int, n_val: int, n_test: int, seed: int = 0, image_size: int = 224,
                formats=DEFAULT_FORMATS) -> Path:
    """Make a world of n_train + n_val + n_test patients and write it under out_dir (see the module docstring)."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"synthetic.write_world: unknown formats {unknown}; expected a subset of {FORMATS}")
    if "wfdb" in formats and "images" not in formats:
        raise ValueError("synthetic.write_world: format 'wfdb' writes triplets.csv, which needs format 'images' too")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = make_world(n_train + n_val + n_test, seed, image_size)
    split = np.array(["train"] * n_train + ["val"] * n_val + ["test"] * n_test)
    split_rows = {s: np.flatnonzero(split == s) for s in ("train", "val", "test")}
    ids = [str(h) for h in world.hadm_id]
    table = pd.DataFrame({"hadm_id": world.hadm_id, "split": split} | world.labels)

    if "images" in formats:
        (out / "images").mkdir(exist_ok=True)
        for i, h in enumerate(ids):
            Image.fromarray(world.cxr[i]).save(out / "images" / f"{h}.png")
        table.insert(0, "path", [f"images/{h}.png" for h in ids])
        table.to_csv(out / "images.csv", index=False)
    if "segmentation" in formats:
        for part, masks in (("lung", world.lung_mask), ("heart", world.heart_mask)):
            (out / "masks" / part).mkdir(parents=True, exist_ok=True)
            for i, h in enumerate(ids):
                Image.fromarray(masks[i] * np.uint8(255)).save(out / "masks" / part / f"{h}.png")
        pd.DataFrame({"img_path": [f"images/{h}.png" for h in ids],
                      "mask_path": [f"masks/lung/{h}.png" for h in ids],
                      "heart_mask_path": [f"masks/heart/{h}.png" for h in ids],
                      "split": split}).to_csv(out / "segmentation.csv", index=False)
    if "labs" in formats:
        labs = pd.DataFrame(world.labs, columns=[str(i) for i in LAB_ITEMIDS])
        labs.insert(0, "hadm_id", world.hadm_id)
        labs.to_csv(out / "labs.csv", index=False)
    if "wfdb" in formats:
        (out / "ecg").mkdir(exist_ok=True)
        _write_wfdb(out / "ecg", world, np.arange(len(ids)))
        pd.DataFrame({"hadm_id": world.hadm_id, "split": split, "cxr_path": [f"images/{h}.png" for h in ids],
                      "ecg_path": [f"ecg/{h}" for h in ids]}).to_csv(out / "triplets.csv", index=False)
    if "npy" in formats:
        _write_npy(out / "data_npy", world, split_rows, retrieval="retrieval" in formats)

    samples = {"hadm_id": world.hadm_id.tolist(), "split": split.tolist()}
    samples |= {f.name: np.round(getattr(world.physiology, f.name), 6).tolist() for f in fields(Physiology)}
    samples |= {name: v.tolist() for name, v in world.labels.items()}
    meta = {"seed": seed, "image_size": image_size, "n_train": n_train, "n_val": n_val, "n_test": n_test,
            "formats": list(formats), "lead_names": list(LEAD_NAMES), "lab_itemids": list(LAB_ITEMIDS),
            "label_names": list(LABEL_NAMES), "samples": samples}
    (out / "world.json").write_text(json.dumps(meta, indent=1))
    return out
