"""The public releases of the Stage-3 segmentation benchmarks, read as the original PaCX-MAE code reads them.

One function per benchmark (`pacx/data/tasks.py` names them): it takes the folder a release unpacks to and returns
the table evaluate.py's `SegmentationCSV` reads: `img_path`, `mask_path` (relative to that folder) and `split`
(train / val / test, in that order). The sources are those of `pacx/data/task_layouts.py`
(METHOD.md "Found by running the original"); masks are binarised when loaded (`SegmentationCSV`: > 127).
"""
from pathlib import Path

import numpy as np
import pandas as pd

from pacx.data.task_layouts import holdout, images_in, relative
from pacx.data.tables import DatasetFormatError, cell_error, read_table


def pairs(images: list[Path], masks: list[Path], splits: dict[str, np.ndarray], root: Path) -> pd.DataFrame:
    """The segmentation table: for each split in order its rows of (image, mask)."""
    img, mask = np.asarray(relative(images, root), dtype=object), np.asarray(relative(masks, root), dtype=object)
    return pd.concat([pd.DataFrame({"img_path": img[rows], "mask_path": mask[rows], "split": name})
                      for name, rows in splits.items()], ignore_index=True)


def cxlseg(root: Path) -> pd.DataFrame:
    """CXLSEG: Chest X-ray Dataset with Lung Segmentation (CXLSeg) 1.0.0 (PhysioNet `chest-x-ray-segmentation`,
    credentialed): `CXLSeg-split.csv` (`dicom_id`, `subject_id`, `study_id`, `split` = train / validate / test: the
    release's split, 194,660 / 24,332 / 24,332) and `files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg` with its mask
    `<dicom_id>-mask.jpg` beside it. The path rule is the original's first segmentation loader (`Stage3_Seg.py` at
    commit ca3d32a, `CXLSegLungDataset`); its final `Stage3_Seg.py` reads img_path / mask_path CSVs that are not in
    the repository, so whether it later subsampled or re-split CXLSeg is not known."""
    csv = root / "CXLSeg-split.csv"
    df = read_table(csv, ["dicom_id", "subject_id", "study_id", "split"])
    names = {"train": "train", "validate": "val", "test": "test"}
    split = df["split"].str.strip().map(names)
    if split.isna().any():
        i = int(np.flatnonzero(split.isna().to_numpy())[0])
        raise cell_error(csv, i, "split", "train, validate or test", df["split"].iloc[i])
    subject, study, dicom = (df[c].str.strip() for c in ("subject_id", "study_id", "dicom_id"))
    stem = "files/p" + subject.str[:2] + "/p" + subject + "/s" + study + "/" + dicom
    images, masks = [root / p for p in stem + ".jpg"], [root / p for p in stem + "-mask.jpg"]
    return pairs(images, masks, {s: np.flatnonzero((split == s).to_numpy()) for s in ("train", "val", "test")}, root)


def covidqu_lungs(root: Path) -> pd.DataFrame:
    """COVIDQU-SEG: COVID-QU-Ex lung masks (Kaggle `anasmohammedtahir/covidqu`), its `Lung Segmentation Data/Lung
    Segmentation Data/` folder: `{Train,Val,Test}/{COVID-19,Non-COVID,Normal}/images/<name>.png` with the mask
    `lung masks/<name>.png` beside `images/`. The split is the release's; an image without a mask is left out
    (`Data/covidqu_seg_data.ipynb`)."""
    images, masks, splits, start = [], [], {}, 0
    for split in ("Train", "Val", "Test"):
        for cls in ("COVID-19", "Non-COVID", "Normal"):
            for image in images_in(root / split / cls / "images", (".png",)):
                mask = root / split / cls / "lung masks" / image.name
                if mask.is_file():
                    images.append(image)
                    masks.append(mask)
        splits[split.lower()], start = np.arange(start, len(images)), len(images)
    return pairs(images, masks, splits, root)


def qata(root: Path) -> pd.DataFrame:
    """QATA: QaTa-COV19 v2 (Kaggle `aysendegerli/qatacov19-dataset`), its `QaTa-COV19/QaTa-COV19-v2/` folder:
    `Train Set/Images/<name>.png` with the infection mask `Train Set/Ground-truths/mask_<name>.png`, and the same
    under `Test Set/`. Rule (`Data/qata_data.ipynb`): test is the release's test set; val is 10% of the training
    pairs (sorted by name), unstratified, seed 42; an image without a mask is left out."""
    found = {}
    for split in ("Train Set", "Test Set"):
        listed = [(image, root / split / "Ground-truths" / f"mask_{image.name}")
                  for image in images_in(root / split / "Images", (".png",))]
        found[split] = [(image, mask) for image, mask in listed if mask.is_file()]
    if not found["Train Set"]:
        raise DatasetFormatError(f"{root / 'Train Set'}: no image with a mask (Images/<name>.png and "
                                 f"Ground-truths/mask_<name>.png)")
    train, val = holdout(np.arange(len(found["Train Set"])), 0.1, root / "Train Set")
    listed = found["Train Set"] + found["Test Set"]
    test = np.arange(len(found["Train Set"]), len(listed))
    return pairs([i for i, _ in listed], [m for _, m in listed], {"train": train, "val": val, "test": test}, root)
