"""Image data sets: the file layouts users already have, read into dict items of tensors.

Implements METHOD.md "Data formats users have": a generic image CSV (classification labels optional), a folder of
images (MAE pretraining) and a segmentation CSV; the public chest X-ray benchmarks (CheXpert, NIH ChestX-ray14,
VinDr-CXR) are in `pacx/data/cxr_datasets.py`, Symile-MIMIC's arrays in `pacx/data/symile.py`.

Every adapter checks its input when it is built (columns, label values, duplicate ids, and by default that the
listed files exist) and raises `DatasetFormatError` (`pacx/data/tables.py`) naming the file, line and column. Images
come back as uint8 (3, H, W) tensors from `pacx.data.images.read_rgb_tensor`; an optional `transform` callable is
applied to them (the augmentations live in `pacx/data/transforms.py`). Labels are float (C,) vectors for binary /
multilabel tasks and an int64 class id for multiclass.

Notation: N = items, C = label columns, H, W = image height, width.
"""
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from pacx.data.images import DICOM_SUFFIXES, PILLOW_SUFFIXES, is_dicom, read_gray, read_rgb_tensor
from pacx.data.tables import DatasetFormatError, cell_error, file_column, parse_codes, read_table

IMAGE_SUFFIXES = PILLOW_SUFFIXES + DICOM_SUFFIXES


def image_item(path: Path, transform) -> torch.Tensor:
    image = read_rgb_tensor(path)  # (3, H, W) uint8
    return transform(image) if transform is not None else image


class LabelledImages(Dataset):
    """Items {image, label, id} from `self.paths`, `self.labels` (N, C) and `self.ids`, set by a subclass."""

    transform: Callable | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {
            "image": image_item(self.paths[i], self.transform),
            "label": torch.from_numpy(self.labels[i]),
            "id": str(self.ids[i]),
        }


# ---- generic ----

class ImageCSV(Dataset):
    """A CSV with an image-path column and optional label columns.

    task "binary": one 0/1 column -> label float (1,); "multilabel": 0/1 columns -> float (C,); "multiclass": one
    column of integer ids 0..K-1, or of class names when `classes` lists them -> int64 id. Relative paths are taken
    under `root` (default: the CSV's folder). Items: image, path, and label when label columns are given.
    """

    def __init__(self, csv, image_column: str, label_columns=None, root=None, task: str = "binary",
                 classes=None, transform: Callable | None = None, check_files: bool = True):
        if task not in ("binary", "multiclass", "multilabel"):
            raise DatasetFormatError(f"ImageCSV: task must be binary, multiclass or multilabel, found {task!r}")
        label_columns = [label_columns] if isinstance(label_columns, str) else list(label_columns or [])
        if task in ("binary", "multiclass") and len(label_columns) > 1:
            raise DatasetFormatError(f"{csv}: task {task!r} takes one label column, found {label_columns}")
        df = read_table(csv, [image_column] + label_columns)
        root = Path(root) if root is not None else Path(csv).parent
        self.paths = file_column(df, image_column, root, csv, check_files)
        self.task, self.transform, self.classes = task, transform, list(classes) if classes else None
        self.label_names = label_columns
        self.labels = None
        if label_columns and task == "multiclass":
            self.labels = self._class_ids(df[label_columns[0]].str.strip(), csv, label_columns[0])
        elif label_columns:
            self.labels = parse_codes(df, label_columns, csv)  # (N, C)

    def _class_ids(self, text: pd.Series, csv, column: str) -> np.ndarray:
        if self.classes is not None:
            ids = text.map({name: k for k, name in enumerate(self.classes)})
            expected = f"one of {self.classes}"
        else:
            ids = pd.to_numeric(text, errors="coerce")
            ids = ids.where(np.isfinite(ids) & (ids >= 0) & (ids == ids.round()))  # "inf" parses, is no class
            expected = "an integer class id >= 0 (pass classes=[...] for class names)"
        bad = ids.isna().to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise cell_error(csv, i, column, expected, text.iloc[i])
        return ids.to_numpy(dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        item = {"image": image_item(self.paths[i], self.transform), "path": str(self.paths[i])}
        if self.labels is not None:
            item["label"] = torch.tensor(self.labels[i])  # float (C,) or int64 ()
        return item


def is_image_file(path: Path) -> bool:
    """An image by its suffix, or a DICOM file whatever its name (PACS exports often have no extension); DICOMDIR,
    the index of a DICOM export, holds no image."""
    if not path.is_file() or path.name == "DICOMDIR":
        return False
    return path.suffix.lower() in IMAGE_SUFFIXES or is_dicom(path)


class ImageFolderList(Dataset):
    """Every image file under `root` (recursively, sorted by path; `is_image_file`): unlabelled images for MAE
    pretraining."""

    def __init__(self, root, transform: Callable | None = None):
        root = Path(root)
        if not root.is_dir():
            raise DatasetFormatError(f"{root}: no such folder")
        self.paths = sorted(p for p in root.rglob("*") if is_image_file(p))
        if not self.paths:
            raise DatasetFormatError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}, or DICOM files by their "
                                     f"'DICM' marker whatever their name) found under it")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        return {"image": image_item(self.paths[i], self.transform), "path": str(self.paths[i])}


class SegmentationCSV(Dataset):
    """A CSV with `img_path` and `mask_path`: items image uint8 (3, H, W), mask float (1, H, W) = (mask > 127).

    `transform(image, mask) -> (image, mask)` gets both, so one random crop or flip moves them together.
    """

    def __init__(self, csv, root=None, transform: Callable | None = None, image_column: str = "img_path",
                 mask_column: str = "mask_path", check_files: bool = True):
        df = read_table(csv, [image_column, mask_column])
        root = Path(root) if root is not None else Path(csv).parent
        self.paths = file_column(df, image_column, root, csv, check_files)
        self.mask_paths = file_column(df, mask_column, root, csv, check_files)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        image = read_rgb_tensor(self.paths[i])  # (3, H, W) uint8
        mask = torch.from_numpy(read_gray(self.mask_paths[i]) > 127).float()[None]  # (1, H, W)
        if mask.shape[1:] != image.shape[1:]:
            raise DatasetFormatError(
                f"{self.mask_paths[i]}: mask is {tuple(mask.shape[1:])} but image {self.paths[i]} is "
                f"{tuple(image.shape[1:])} (H, W)"
            )
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return {"image": image, "mask": mask, "path": str(self.paths[i])}
