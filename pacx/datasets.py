"""Data set adapters: the file layouts users already have, read into dict items of tensors.

Implements DESIGN.md "Data formats users have": a generic image CSV, a folder of images (MAE pretraining), CheXpert,
NIH ChestX-ray14, VinDr-CXR image labels, a segmentation CSV, Symile-MIMIC's `data_npy/` arrays and a raw
(CXR, ECG, labs) triplet CSV. The Symile layout follows rajesh-lab/symile `experiments/datasets.py`.

Every adapter checks its input when it is built (columns, label values, duplicate ids, array shapes, and by default
that the listed files exist) and raises `DatasetFormatError`, one line naming the file, the line (the CSV header is
line 1) and the column, what was expected and what was found. Images come back as uint8 (3, H, W) tensors from
`pacx.images.read_rgb_tensor`; an optional `transform` callable is applied to them (the augmentations live in
`pacx/transforms.py`). Labels are float (C,) vectors for binary / multilabel tasks and an int64 class id for multiclass.

Notation: N = items, C = label columns, H, W = image height, width, L = ECG samples per lead.
"""
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .errors import DataError
from .images import DICOM_SUFFIXES, PILLOW_SUFFIXES, read_gray, read_rgb_tensor

IMAGE_SUFFIXES = PILLOW_SUFFIXES + DICOM_SUFFIXES

CHEXPERT_LABELS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
)
NIH_LABELS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
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
            ids = ids.where((ids >= 0) & (ids == ids.round()))
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


# ---- public chest X-ray data sets ----

class CheXpert(Dataset):
    """CheXpert `train.csv` / `valid.csv` (also `train_visualCheXbert.csv`): `Path` + 14 label columns.

    Cells are 1, 0, -1 (uncertain) or blank (not mentioned). `uncertain` sets -1 to 1 ("u_ones", the default, the
    U-Ones policy of Irvin et al. 2019), to 0 ("u_zeros"), or masks it out ("ignore"); `blank` sets blanks to 0
    ("zeros", the default: not mentioned = negative) or masks them ("ignore"). Items: image, label float (14,),
    label_mask float (14,) (0 = leave this label out of the loss; masked labels are 0), path.
    Path values start with the data set folder ("CheXpert-v1.0-small/train/..."): `root` is the folder holding
    that folder, or that folder itself; by default the CSV's own folder, where the release puts it.
    `label_columns=()` reads images only.
    """

    def __init__(self, csv, root=None, uncertain: str = "u_ones", blank: str = "zeros",
                 label_columns=CHEXPERT_LABELS, transform: Callable | None = None, check_files: bool = True):
        if uncertain not in ("u_ones", "u_zeros", "ignore"):
            raise DatasetFormatError(f"CheXpert: uncertain must be u_ones, u_zeros or ignore, found {uncertain!r}")
        if blank not in ("zeros", "ignore"):
            raise DatasetFormatError(f"CheXpert: blank must be zeros or ignore, found {blank!r}")
        csv = Path(csv)
        self.label_names = list(label_columns)
        df = read_table(csv, ["Path"] + self.label_names)
        check_unique(df["Path"], csv, "Path")
        prefixes = df["Path"].str.extract(r"^(CheXpert-v1\.0[^/]*)/", expand=False).dropna()
        prefix = prefixes.iloc[0] if len(prefixes) else None  # the data set folder's name, e.g. CheXpert-v1.0-small
        if root is None:
            data_dir = csv.parent
        else:
            root = Path(root)
            data_dir = root / prefix if prefix and (root / prefix).is_dir() else root
        relative = df.assign(Path=df["Path"].str.replace(r"^CheXpert-v1\.0[^/]*/", "", regex=True))
        self.paths = file_column(relative, "Path", data_dir, csv, check_files)
        codes = parse_codes(df, self.label_names, csv, allowed=(1, 0, -1), allow_blank=True)  # (N, 14), NaN blank
        self.label_mask = np.ones_like(codes)
        unknown, unmentioned = codes == -1, np.isnan(codes)
        codes[unknown] = 1.0 if uncertain == "u_ones" else 0.0
        codes[unmentioned] = 0.0
        if uncertain == "ignore":
            self.label_mask[unknown] = 0.0
        if blank == "ignore":
            self.label_mask[unmentioned] = 0.0
        self.labels, self.transform = codes, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        return {
            "image": _image_item(self.paths[i], self.transform),
            "label": torch.from_numpy(self.labels[i]),
            "label_mask": torch.from_numpy(self.label_mask[i]),
            "path": str(self.paths[i]),
        }


class NIHChestXray14(Dataset):
    """NIH ChestX-ray14: `Data_Entry_2017.csv` (`Image Index`, `Finding Labels` joined by '|', 'No Finding'),
    the official `train_val_list.txt` / `test_list.txt` splits (split "train_val", "test" or "all"), 14 labels in
    NIH_LABELS order. Images are found in `root/images/` or the release's `root/images_0XX/images/` folders.
    Items: image, label float (14,), id (the image file name). `patient_ids` allows a patient-wise val split.
    """

    SPLIT_FILES = {"train_val": "train_val_list.txt", "test": "test_list.txt"}

    def __init__(self, root, split: str = "train_val", csv=None, transform: Callable | None = None,
                 check_files: bool = True):
        if split not in ("train_val", "test", "all"):
            raise DatasetFormatError(f"NIHChestXray14: split must be train_val, test or all, found {split!r}")
        root = Path(root)
        csv = Path(csv) if csv is not None else root / "Data_Entry_2017.csv"
        df = read_table(csv, ["Image Index", "Finding Labels"])
        check_unique(df["Image Index"], csv, "Image Index")
        column = {name: j for j, name in enumerate(NIH_LABELS)}
        labels = np.zeros((len(df), len(NIH_LABELS)), dtype=np.float32)  # (N, 14) multi-hot
        for i, cell in enumerate(df["Finding Labels"]):
            for name in (n.strip() for n in cell.split("|")):
                if name == "No Finding":
                    continue
                if name not in column:
                    raise _fail(csv, i, "Finding Labels", "'|'-joined NIH finding names or 'No Finding'", name)
                labels[i, column[name]] = 1.0
        rows = np.arange(len(df)) if split == "all" else self._split_rows(root / self.SPLIT_FILES[split], df, csv)
        self.ids = df["Image Index"].to_numpy()[rows]
        self.labels = labels[rows]
        self.label_names = list(NIH_LABELS)
        self.patient_ids = df["Patient ID"].to_numpy()[rows] if "Patient ID" in df.columns else None
        found = {}  # file name -> path, over the flat and the per-archive image folders
        for folder in [root / "images"] + sorted(root.glob("images_*/images")):
            if folder.is_dir():
                for p in folder.iterdir():
                    found.setdefault(p.name, p)
        self.paths = [found.get(name, root / "images" / name) for name in self.ids]
        if check_files:
            check_exist(self.paths, csv, "Image Index", rows)
        self.transform = transform

    @staticmethod
    def _split_rows(list_file: Path, df: pd.DataFrame, csv: Path) -> np.ndarray:
        if not list_file.is_file():
            raise DatasetFormatError(f"{list_file}: no such file (the official split list)")
        position = {name: i for i, name in enumerate(df["Image Index"])}
        rows, seen = [], set()
        for k, line in enumerate(list_file.read_text().splitlines()):
            name = line.strip()
            if not name:
                continue
            if name not in position:
                raise DatasetFormatError(f"{list_file}: line {k + 1}: image {name!r} is not listed in {csv.name}")
            if name in seen:
                raise DatasetFormatError(f"{list_file}: line {k + 1}: image {name!r} is listed twice")
            seen.add(name)
            rows.append(position[name])
        return np.array(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {
            "image": _image_item(self.paths[i], self.transform),
            "label": torch.from_numpy(self.labels[i]),
            "id": str(self.ids[i]),
        }


class VinDrCXR(Dataset):
    """VinDr-CXR image-level labels: `image_labels_{train,test}.csv` with `image_id`, optional `rad_id`, and 0/1
    label columns. With `rad_id` (train: 3 radiologists per image) an image is positive for a label when a strict
    majority of its readers marked it; without it (test: one consensus row) the row is used as is.
    Kept labels: `label_names` if given (pass the training set's, so the test set has the same columns), else the
    columns other than `exclude` with at least `min_positives` positive images, in file order. "No finding" is
    excluded by default: it is the absence of the others, not a finding. Images: `image_dir/<image_id>` with .png,
    .jpg, .dicom or .dcm (a PNG export is preferred when several exist). Items: image, label float (C,), id.
    """

    SUFFIXES = (".png", ".jpg", ".jpeg", ".dicom", ".dcm")

    def __init__(self, csv, image_dir, min_positives: int = 50, label_names=None, exclude=("No finding",),
                 transform: Callable | None = None, check_files: bool = True):
        csv, image_dir = Path(csv), Path(image_dir)
        df = read_table(csv, ["image_id"])
        columns = [c for c in df.columns if c not in ("image_id", "rad_id")]
        if not columns:
            raise DatasetFormatError(f"{csv}: no label columns besides image_id/rad_id")
        codes = parse_codes(df, columns, csv)  # (R, C): one row per reading
        if "rad_id" in df.columns:
            check_unique(df["image_id"] + " / " + df["rad_id"], csv, "image_id / rad_id")
            groups = pd.DataFrame(codes, columns=columns).groupby(df["image_id"].to_numpy(), sort=False)
            votes, readers = groups.sum(), groups.size().to_numpy()[:, None]  # (N, C), (N, 1)
            ids, positive = votes.index.to_numpy(), votes.to_numpy() * 2 > readers  # strict majority
            first_rows = groups.cumcount().to_numpy() == 0  # each image's first reading, in image order
            rows = np.flatnonzero(first_rows)
        else:
            check_unique(df["image_id"], csv, "image_id")
            ids, positive, rows = df["image_id"].to_numpy(), codes == 1, None
        if label_names is None:
            counts = positive.sum(axis=0)
            keep = [j for j, c in enumerate(columns) if c not in exclude and counts[j] >= min_positives]
            if not keep:
                raise DatasetFormatError(f"{csv}: no label column has >= {min_positives} positive images")
        else:
            absent = [n for n in label_names if n not in columns]
            if absent:
                raise DatasetFormatError(f"{csv}: missing label column {absent[0]!r} (found: {', '.join(columns)})")
            keep = [columns.index(n) for n in label_names]
        self.label_names = [columns[j] for j in keep]
        self.labels = positive[:, keep].astype(np.float32)  # (N, C)
        self.ids = ids
        if not image_dir.is_dir():
            raise DatasetFormatError(f"{image_dir}: no such image folder")
        present = {p.name for p in image_dir.iterdir()}
        self.paths = [
            image_dir / next((f"{i}{s}" for s in self.SUFFIXES if f"{i}{s}" in present), f"{i}{self.SUFFIXES[0]}")
            for i in ids
        ]
        if check_files:
            check_exist(self.paths, csv, "image_id", rows)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {
            "image": _image_item(self.paths[i], self.transform),
            "label": torch.from_numpy(self.labels[i]),
            "id": str(self.ids[i]),
        }


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
    wfdb read MIMIC-IV-ECG: aVF before aVL, pacx.ecg_io.MIMIC_ECG_LEADS), labs (50,), mask (50,) (1 = observed),
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
        item = {
            "cxr": self.cxr_transform(cxr) if self.cxr_transform is not None else cxr,
            "ecg": torch.from_numpy(np.ascontiguousarray(a["ecg"][i, 0].T, dtype=np.float32)),  # (L, 12) -> (12, L)
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
    pacx.ecg_io.read_wfdb_ecg + ecgfounder_preprocess) and `lab_lookup(lab_id) -> (percentiles (50,), observed
    (50,))` (e.g. rows of pacx.labs.LabPercentiles.transform), so items match SymileMIMIC's: image (after
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
