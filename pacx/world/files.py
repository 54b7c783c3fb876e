"""The built-in world on disk: `write_world` makes a world (`pacx.world.physiology.make_world`) and writes it in the
real file formats users have (METHOD.md "Data formats users have"), so every stage reads it exactly as it reads theirs.

Files written by `write_world(out_dir, ...)` (paths inside CSVs are relative to out_dir):
  images/{hadm_id}.png, images.csv          8-bit gray PNG; columns path, hadm_id, split, <labels>
  masks/{lung,heart}/{hadm_id}.png,         0/255 PNG masks; columns img_path, mask_path (lungs),
    segmentation.csv                        heart_mask_path, split
  labs.csv                                  hadm_id + one column per itemid ("50802", ...), empty = missing
  ecg/{hadm_id}.hea/.dat, triplets.csv      WFDB, fmt 16, 1000 adu/mV, 500 Hz, 12 named leads (formats "wfdb");
                                            columns hadm_id, split, cxr_path, ecg_path (record path, no suffix)
  data_npy/{train,val,val_retrieval,test}/  the Symile-MIMIC tensors, see `_write_npy` (the two retrieval splits
                                            only with format "retrieval")
  world.json                                seed, sizes, names, and per sample hadm_id, split, state (the
                                            Physiology fields), ECG parameters (ecg_<name>), labels

Notation: N = patients, S = image side, L = 50 labs.
"""
import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pacx.data.ecg_io import MIMIC_ECG_LEADS
from pacx.data.labs import LAB_ITEMIDS, LabPercentiles
from pacx.world.ecg import FS, LEAD_NAMES
from pacx.world.physiology import LABEL_NAMES, Physiology, World, make_world

FORMATS = ("images", "segmentation", "labs", "npy", "retrieval", "wfdb")
# WFDB is opt-in (slowest to write); "retrieval" adds the Symile val_retrieval / test splits (10 rows a patient).
DEFAULT_FORMATS = ("images", "segmentation", "labs", "npy", "retrieval")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RETRIEVAL_NEGATIVES = 9  # Symile-MIMIC: each query has 10 candidates, itself and 9 others from its split
_ROWS = 256  # rows converted per step when writing the large .npy arrays


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
        raise ValueError(f"write_world: unknown formats {unknown}; expected a subset of {FORMATS}")
    if "wfdb" in formats and "images" not in formats:
        raise ValueError("write_world: format 'wfdb' writes triplets.csv, which needs format 'images' too")
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
    samples |= {f"ecg_{k}": np.round(v, 6).tolist() for k, v in world.ecg_params.items()}
    samples |= {name: v.tolist() for name, v in world.labels.items()}
    meta = {"seed": seed, "image_size": image_size, "n_train": n_train, "n_val": n_val, "n_test": n_test,
            "formats": list(formats), "lead_names": list(LEAD_NAMES), "lab_itemids": list(LAB_ITEMIDS),
            "label_names": list(LABEL_NAMES), "samples": samples}
    (out / "world.json").write_text(json.dumps(meta, indent=1))
    return out
