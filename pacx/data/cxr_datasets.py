"""The public chest X-ray benchmarks as data sets: CheXpert, NIH ChestX-ray14 and VinDr-CXR image labels.

Implements METHOD.md "Data formats users have" for these three layouts, with the checks and one-line errors of
`pacx.data.datasets` (whose helpers they share). Items: image uint8 (3, H, W) (or `transform(image)`), label float (C,),
and an id or path.

Notation: N = images, C = label columns.
"""
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from pacx.data.datasets import LabelledImages, image_item
from pacx.data.tables import (DatasetFormatError, cell_error, check_exist, check_unique, file_column, parse_codes,
                              read_table)

CHEXPERT_LABELS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
)
NIH_LABELS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)

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
            "image": image_item(self.paths[i], self.transform),
            "label": torch.from_numpy(self.labels[i]),
            "label_mask": torch.from_numpy(self.label_mask[i]),
            "path": str(self.paths[i]),
        }


class NIHChestXray14(LabelledImages):
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
                    raise cell_error(csv, i, "Finding Labels", "'|'-joined NIH finding names or 'No Finding'", name)
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


class VinDrCXR(LabelledImages):
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
