"""Stage-1 inputs: unlabelled images for the MAE and (percentile, observed-mask) arrays for the lab DAE.

METHOD.md "Stage 1a" Data (CheXpert `train.csv` `Path` column, all views) and "Stage 1b" / "Data formats users
have" (Symile-MIMIC `labs_percentiles_*.npy` + `labs_missingness_*.npy`, 1 = observed; or a raw labs table whose
percentile transform is fitted here, on this training table only, and saved beside the run for later stages).
"""
from pathlib import Path

import numpy as np
import torch

from torch.utils.data import Subset

from pacx.data.cache import INDEX, CachedImages
from pacx.data.datasets import ImageCSV, ImageFolderList
from pacx.data.tables import load_npy, read_table
from pacx.errors import DataError
from pacx.data.lab_table import read_lab_table
from pacx.data.labs import LabPercentiles


def image_dataset(data: str, image_column: str = "Path", image_root: str = "", split_column: str = "",
                  split: str = "train"):
    """A preprocessing cache (`pacx.data.cache`), a folder of images, or a CSV with an image-path column (optionally
    only the rows whose `split_column` equals `split`); items are dicts with a uint8 (3, H, W) 'image'."""
    path = Path(data)
    if (path / INDEX).is_file():  # a preprocessing cache built by `python -m pacx.data.make_cache`
        return CachedImages(path)
    if path.is_dir():
        return ImageFolderList(path)
    if not path.exists():
        raise DataError(f"{data}: no such file or folder (expected a folder of images or a .csv with an image-path "
                        f"column)")
    if path.suffix.lower() != ".csv":
        raise DataError(f"{data}: expected a folder of images or a .csv with an image-path column")
    if not split_column:
        return ImageCSV(path, image_column, root=image_root or None)
    rows = np.flatnonzero(read_table(path, [image_column, split_column])[split_column].astype(str) == split)
    if not len(rows):
        raise DataError(f"{data}: no row has {split_column} == {split!r}")
    return Subset(ImageCSV(path, image_column, root=image_root or None), rows.tolist())


def lab_arrays(data: str, id_column: str | None = None, mapping: dict | None = None,
               log=print) -> tuple[torch.Tensor, torch.Tensor, LabPercentiles | None]:
    """(percentiles (N, 50), observed (N, 50)) float32 tensors for DAE training, and the percentile transform fitted
    on a raw table (None for Symile arrays, whose percentiles come computed); the caller saves it with the run.
    A table is read by `pacx.data.lab_table.read_lab_table` (`mapping`: {your column: lab}; `log`: its notes)."""
    path, transform = Path(data), None
    if path.is_dir() and (id_column or mapping):
        raise DataError(f"{data}: a Symile-MIMIC folder has its 50 labs in order; --lab_id_column, --lab_columns and "
                        f"--lab_map apply to a lab table (CSV)")
    if path.is_dir():
        split = path / "train" if (path / "train").is_dir() else path
        name = split.name
        x_file, m_file = split / f"labs_percentiles_{name}.npy", split / f"labs_missingness_{name}.npy"
        for f in (x_file, m_file):
            if not f.is_file():
                raise DataError(f"{f}: not found (expected a Symile-MIMIC data_npy/ folder or its train/ split)")
        x, m = np.array(load_npy(x_file)), np.array(load_npy(m_file))  # small: read whole, not mapped
        if x.ndim != 2 or x.shape[1] != 50 or x.shape != m.shape:
            raise DataError(f"{x_file}: expected (N, 50) percentiles matching {m_file.name}, found {x.shape} and "
                            f"{m.shape}")
        bad = ~((x >= 0) & (x <= 1))  # NaN fails both comparisons
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise DataError(f"{x_file}: lab percentile at row {row}, column {col} is {x[row, col]}, expected a "
                            f"number in [0, 1]")
        if not np.isin(m, (0, 1)).all():
            raise DataError(f"{m_file}: the observed mask must be 0/1 (1 = observed)")
    else:  # a raw table: its fitted transform gives percentiles in [0, 1] and a 0/1 mask
        table = read_lab_table(path, id_column, mapping, log)  # the id column, if any, is not a lab: never fitted
        transform = LabPercentiles().fit(table)
        x, m = transform.transform(table)
    return torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(np.asarray(m, np.float32)), transform
