"""Data set adapters: the file layouts users already have, read into dict items of tensors.

Implements DESIGN.md "Data formats users have": a generic image CSV, a folder of images (MAE pretraining), a
segmentation CSV, Symile-MIMIC's `data_npy/` arrays and a raw (CXR, ECG, labs) triplet CSV; the public chest X-ray
benchmarks (CheXpert, NIH ChestX-ray14, VinDr-CXR) are in `pacx/data/cxr_datasets.py`. The Symile layout follows rajesh-lab/symile `experiments/datasets.py`.

Every adapter checks its input when it is built (columns, label values, duplicate ids, array shapes, and by default
that the listed files exist) and raises `DatasetFormatError`, one line naming the file, the line (the CSV header is
line 1) and the column, what was expected and what was found. Images come back as uint8 (3, H, W) tensors from
`pacx.data.images.read_rgb_tensor`; an optional `transform` callable is applied to them (the augmentations live in
`pacx/data/transforms.py`). Labels are float (C,) vectors for binary / multilabel tasks and an int64 class id for multiclass.

Notation: N = items, C = label columns, H, W = image height, width, L = ECG samples per lead.
"""
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from pacx.errors import DataError
from pacx.data.images import DICOM_SUFFIXES, PILLOW_SUFFIXES, read_gray, read_rgb_tensor

IMAGE_SUFFIXES = PILLOW_SUFFIXES + DICOM_SUFFIXES

SYMILE_RETRIEVAL_SPLITS = ("val_retrieval", "test")  # query + 9 candidates per group, hadm_ids repeat
N_LABS = 50


class DatasetFormatError(DataError):
    """A data set file that does not have the expected layout; the message names file, line and column."""


# ---- shared checks ----

def read_table(path: str | Path, columns=()) -> pd.DataFrame:
    """A CSV as strings (blank cells are ""), with `columns` required; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path}: no such file")
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark that would rename the first column
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetFormatError(f"{path}: not a readable CSV table ({type(err).__name__}: {err})") from err
    df = df.fillna("")  # rows shorter than the header give NaN even with keep_default_na=False
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DatasetFormatError(f"{path}: missing column {missing[0]!r} (found columns: {', '.join(df.columns)})")
    if len(df) == 0:
        raise DatasetFormatError(f"{path}: no data rows")
    return df


def _fail(path, row: int, column: str, expected: str, found) -> DatasetFormatError:
    """Error for data row `row` (0-based), which is line row + 2 of the file."""
    return DatasetFormatError(f"{path}: line {row + 2}, column {column!r}: expected {expected}, found {found!r}")


def parse_codes(df: pd.DataFrame, columns, path, allowed=(0, 1), allow_blank: bool = False) -> np.ndarray:
    """(N, C) float32 matrix of the label cells; every cell must be one of `allowed` (blank -> NaN if allowed)."""
    out = np.empty((len(df), len(columns)), dtype=np.float32)
    expected = " or ".join(str(a) for a in allowed) + (" or blank" if allow_blank else "")
    for j, column in enumerate(columns):
        text = df[column].str.strip()
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)  # "1.0" -> 1; "yes" -> NaN
        blank = (text == "").to_numpy()
        ok = np.isin(values, allowed) | (blank & allow_blank)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise _fail(path, i, column, expected, df[column].iloc[i])
        out[:, j] = values
    return out


def check_unique(values: pd.Series, path, column: str) -> None:
    dup = values.duplicated().to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((values == values.iloc[i]).to_numpy())[0])
        raise _fail(path, i, column, f"unique ids (first seen on line {first + 2})", values.iloc[i])


def file_column(df: pd.DataFrame, column: str, root: Path, path, check_files: bool) -> list[Path]:
    """The column's file paths, relative ones taken under `root`; a blank cell is an error, and so (with
    `check_files`) is a file that does not exist."""
    text = df[column].str.strip()
    blank = (text == "").to_numpy()
    if blank.any():
        raise _fail(path, int(np.flatnonzero(blank)[0]), column, "a file path", "")
    files = [Path(v) if Path(v).is_absolute() else root / v for v in text]
    if check_files:
        check_exist(files, path, column)
    return files


def check_exist(files: list[Path], path, column: str, rows=None) -> None:
    """Every file must exist; one line for all the misses. `rows[k]`: the data row that named files[k]
    (default k), for the line number in the message."""
    missing = [k for k, p in enumerate(files) if not p.is_file()]
    if missing:
        k = missing[0]
        line = (k if rows is None else int(rows[k])) + 2
        raise DatasetFormatError(
            f"{path}: {len(missing)} of {len(files)} files in column {column!r} do not exist; "
            f"first on line {line}: {files[k]}"
        )


def wfdb_header(record: Path) -> Path:
    """A WFDB record's header file; the record may be named with or without its .hea/.dat/.mat extension."""
    return record.with_suffix(".hea") if record.suffix.lower() in (".hea", ".dat", ".mat") else Path(f"{record}.hea")


def _image_item(path: Path, transform) -> torch.Tensor:
    image = read_rgb_tensor(path)  # (3, H, W) uint8
    return transform(image) if transform is not None else image


class LabelledImages(Dataset):
    """Items {image, label, id} from `self.paths`, `self.labels` (N, C) and `self.ids`, set by a subclass."""

    transform: Callable | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {
            "image": _image_item(self.paths[i], self.transform),
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
            raise _fail(csv, i, column, expected, text.iloc[i])
        return ids.to_numpy(dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        item = {"image": _image_item(self.paths[i], self.transform), "path": str(self.paths[i])}
        if self.labels is not None:
            item["label"] = torch.tensor(self.labels[i])  # float (C,) or int64 ()
        return item


class ImageFolderList(Dataset):
    """Every image file under `root` (recursively, sorted by path): unlabelled images for MAE pretraining."""

    def __init__(self, root, transform: Callable | None = None):
        root = Path(root)
        if not root.is_dir():
            raise DatasetFormatError(f"{root}: no such folder")
        self.paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.paths:
            raise DatasetFormatError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) found under it")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        return {"image": _image_item(self.paths[i], self.transform), "path": str(self.paths[i])}


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


# ---- paired physiology ----

def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DatasetFormatError(f"{path}: no such file")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)  # train CXR alone is ~12 GB: never read it whole
    except (ValueError, OSError, EOFError) as err:
        raise DatasetFormatError(f"{path}: not a readable .npy array ({type(err).__name__}: {err})") from err
    if arr.dtype.kind not in "biuf":
        raise DatasetFormatError(f"{path}: expected a numeric array, found dtype {arr.dtype}")
    return arr


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
            arr = _load_npy(path)
            fits = arr.ndim == len(shape) and all(isinstance(d, str) or d == a for d, a in zip(shape, arr.shape))
            if not fits:
                raise DatasetFormatError(f"{path}: expected shape ({', '.join(map(str, shape))}), found {arr.shape}")
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


class TripletCSV(Dataset):
    """Raw paired data: a CSV with a CXR image path, a WFDB ECG record path (no extension) and a lab row id.

    The ECG and lab decoding are passed in: `ecg_reader(record_path) -> (12, L) array` (e.g. built on
    pacx.data.ecg_io.read_wfdb_ecg + ecgfounder_preprocess) and `lab_lookup(lab_id) -> (percentiles (50,), observed
    (50,))` (e.g. rows of pacx.data.labs.LabPercentiles.transform), so items match SymileMIMIC's: image (after
    `transform`), ecg, labs, mask, plus path and lab_id. A column is required only when its reader is given.
    """

    def __init__(self, csv, image_column: str = "cxr_path", ecg_column: str = "ecg_path",
                 lab_column: str = "lab_id", root=None, ecg_reader: Callable | None = None,
                 lab_lookup: Callable | None = None, transform: Callable | None = None, check_files: bool = True):
        columns = [image_column] + ([ecg_column] if ecg_reader else []) + ([lab_column] if lab_lookup else [])
        df = read_table(csv, columns)
        root = Path(root) if root is not None else Path(csv).parent
        self.paths = file_column(df, image_column, root, csv, check_files)
        self.ecg_paths = file_column(df, ecg_column, root, csv, False) if ecg_reader else None
        if ecg_reader and check_files:
            check_exist([wfdb_header(p) for p in self.ecg_paths], csv, ecg_column)
        self.lab_ids = df[lab_column].to_numpy() if lab_lookup else None
        self.ecg_reader, self.lab_lookup, self.transform = ecg_reader, lab_lookup, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        item = {"image": _image_item(self.paths[i], self.transform), "path": str(self.paths[i])}
        if self.ecg_reader is not None:
            item["ecg"] = torch.as_tensor(np.asarray(self.ecg_reader(self.ecg_paths[i]), dtype=np.float32))
        if self.lab_lookup is not None:
            labs, observed = self.lab_lookup(self.lab_ids[i])
            item["labs"] = torch.as_tensor(np.asarray(labs, dtype=np.float32))  # (50,)
            item["mask"] = torch.as_tensor(np.asarray(observed, dtype=np.float32))  # (50,) 1 = observed
            item["lab_id"] = str(self.lab_ids[i])
        return item
