"""Symile-MIMIC's `data_npy/{split}/` arrays (PhysioNet, credentialed), memory-mapped: the paired CXR, ECG and labs
of Stage 2 (METHOD.md "Data formats users have"; layout of rajesh-lab/symile `experiments/datasets.py`).

Notation: N = rows, H, W = image height, width, L = ECG samples per lead.
"""
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from pacx.data.tables import DatasetFormatError, load_npy

SYMILE_RETRIEVAL_SPLITS = ("val_retrieval", "test")  # query + 9 candidates per group, hadm_ids repeat
N_LABS = 50


class SymileMIMIC(Dataset):
    """Symile-MIMIC `data_npy/{split}/` arrays, memory-mapped (rajesh-lab/symile layout):
    cxr (N, 3, H, W) ImageNet-normalised, ecg (N, 1, L, 12) in [-1, 1], labs_percentiles (N, 50),
    labs_missingness (N, 50) with 1 = observed, hadm_id (N,); the retrieval splits val_retrieval and test add
    label_hadm_id (N,) and label (N,) (1 = the query's true candidate among 10).
    Items: cxr float (3, H, W) (`cxr_transform` applied to it), ecg float (12, L) in the stored lead order (as
    wfdb read MIMIC-IV-ECG: aVF before aVL, pacx.data.ecg_io.MIMIC_ECG_LEADS), labs (50,), mask (50,) (1 = observed),
    hadm_id, and for retrieval label_hadm_id, label.
    """

    def __init__(self, data_dir, split: str, cxr_transform: Callable | None = None):
        folder = Path(data_dir) / split
        if not folder.is_dir():
            raise DatasetFormatError(f"{folder}: no such folder (expected data_npy/<split>/ of Symile-MIMIC)")
        self.retrieval = split in SYMILE_RETRIEVAL_SPLITS
        shapes = {  # expected shape per array; N is the row count of cxr, letters are free sizes
            "cxr": ("N", 3, "H", "W"), "ecg": ("N", 1, "L", 12), "labs_percentiles": ("N", N_LABS),
            "labs_missingness": ("N", N_LABS), "hadm_id": ("N",),
        }
        if self.retrieval:
            shapes.update(label_hadm_id=("N",), label=("N",))
        arrays, self.files = {}, {}
        for name, shape in shapes.items():
            path = self.files[name] = folder / f"{name}_{split}.npy"
            arr = load_npy(path)
            fits = arr.ndim == len(shape) and all(isinstance(d, str) or d == a for d, a in zip(shape, arr.shape))
            if not fits:
                raise DatasetFormatError(f"{path}: expected shape ({', '.join(map(str, shape))}), found {arr.shape}")
            if name in ("cxr", "ecg") and arr.dtype.kind != "f":  # integer pixels would be read as normalised values
                what = "ImageNet-normalised pixels" if name == "cxr" else "samples scaled to [-1, 1]"
                raise DatasetFormatError(f"{path}: expected floating-point {what}, found dtype {arr.dtype}")
            n = len(arrays.get("cxr", arr))
            if len(arr) != n:
                raise DatasetFormatError(f"{path}: has {len(arr)} rows, but cxr_{split}.npy has {n}")
            arrays[name] = arr
        pct = np.asarray(arrays["labs_percentiles"])  # (N, 50): small enough to check whole
        bad = ~((pct >= 0) & (pct <= 1))  # NaN fails both comparisons
        if bad.any():
            i, j = (int(k) for k in np.argwhere(bad)[0])
            raise DatasetFormatError(f"{self.files['labs_percentiles']}: row {i}, lab {j}: expected a percentile in "
                                     f"[0, 1] (missing ones mean-imputed), found {pct[i, j]}")
        mask = arrays["labs_missingness"]
        bad_rows = np.flatnonzero(~np.isin(mask, (0, 1)).all(axis=1))
        if len(bad_rows):
            i = int(bad_rows[0])
            raise DatasetFormatError(
                f"{folder / f'labs_missingness_{split}.npy'}: row {i}: expected 0/1 (1 = observed), found "
                f"{sorted(set(np.asarray(mask[i]).tolist()) - {0, 1})[:3]}"
            )
        for name in ("hadm_id", "label_hadm_id") if self.retrieval else ("hadm_id",):
            ids = np.asarray(arrays[name])
            bad = np.flatnonzero(~np.isfinite(ids) | (ids != np.round(ids))) if ids.dtype.kind == "f" else []
            if len(bad):
                raise DatasetFormatError(f"{self.files[name]}: row {int(bad[0])}: expected an integer admission id, "
                                         f"found {ids[bad[0]]}")
        if not self.retrieval:  # one row per admission (symile asserts this); retrieval groups reuse candidates
            ids = pd.Series(np.asarray(arrays["hadm_id"]))
            dup = ids.duplicated().to_numpy()
            if dup.any():
                i = int(np.flatnonzero(dup)[0])
                raise DatasetFormatError(
                    f"{folder / f'hadm_id_{split}.npy'}: row {i}: hadm_id {ids.iloc[i]} repeats row "
                    f"{int(np.flatnonzero((ids == ids.iloc[i]).to_numpy())[0])}"
                )
        self.arrays, self.cxr_transform = arrays, cxr_transform

    # DataLoader workers started by spawn/forkserver receive a pickled copy: send the file names and re-open the
    # memory maps there, instead of pickling the arrays' contents (12 GB for the train CXRs).
    def __getstate__(self) -> dict:
        return {**self.__dict__, "arrays": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.arrays = {name: np.load(path, mmap_mode="r") for name, path in self.files.items()}

    def __len__(self) -> int:
        return len(self.arrays["cxr"])

    def __getitem__(self, i: int) -> dict:
        a = self.arrays
        cxr = torch.from_numpy(np.array(a["cxr"][i], dtype=np.float32))  # (3, H, W), copied out of the memory map
        ecg = torch.from_numpy(np.ascontiguousarray(a["ecg"][i, 0].T, dtype=np.float32))  # (L, 12) -> (12, L)
        # Checked per item, not at construction: the train arrays are too large to read whole up front.
        for name, x in (("cxr", cxr), ("ecg", ecg)):
            if not torch.isfinite(x).all():
                raise DatasetFormatError(f"{self.files[name]}: row {i}: expected finite values, found NaN or inf")
        item = {
            "cxr": self.cxr_transform(cxr) if self.cxr_transform is not None else cxr,
            "ecg": ecg,
            "labs": torch.from_numpy(np.array(a["labs_percentiles"][i], dtype=np.float32)),  # (50,)
            "mask": torch.from_numpy(np.array(a["labs_missingness"][i], dtype=np.float32)),  # (50,) 1 = observed
            "hadm_id": torch.tensor(int(a["hadm_id"][i])),
        }
        if self.retrieval:
            item["label_hadm_id"] = torch.tensor(int(a["label_hadm_id"][i]))
            item["label"] = torch.tensor(int(a["label"][i]))
        return item
