"""The public releases of the Stage-3 classification benchmarks, read as the original PaCX-MAE code reads them.

One function per benchmark (`pacx/data/tasks.py` names them; segmentation is in `pacx/data/seg_layouts.py`): it
takes the folder a release unpacks to and returns the table evaluate.py's `ImageCSV` reads: `path` (relative to that
folder), `split` (train / val / test, in that order) and the label columns (0/1; multiclass: `class`, the name).

The rules come from the original (GitHub `Lyce24/PACX-MAE`, METHOD.md "Found by running the original"): class
lists from `Stage3_CL.py`, folders and label columns from `Data/data_modules.py`, splits from `Data/*_data.ipynb`
and `Scripts/`. Where a release has an official split it is used; otherwise the original's rule is repeated with
its seed (42): scikit-learn's `train_test_split` on the same rows in the same order, which gives the same split.
Images are not opened or checked here: evaluate.py's `ImageCSV` / `SegmentationCSV` check every file of the table.
"""
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from pacx.data.cxr_datasets import NIH_LABELS, NIHChestXray14, VinDrCXR
from pacx.data.datasets import IMAGE_SUFFIXES
from pacx.data.tables import DatasetFormatError, parse_codes, read_table

SEED = 42  # random_state of every split in the original's notebooks and scripts

# Label and class lists in the original's order (Stage3_CL.py; the output units of the linear head).
CHESTX6_CLASSES = ("Covid-19", "Emphysema", "Normal", "Pneumonia-Bacterial", "Pneumonia-Viral", "Tuberculosis")
COVIDQU_CLASSES = ("Normal", "COVID-19", "Non-COVID")  # covidqu_data.ipynb: Normal 0, COVID-19 1, Non-COVID 2
NIH_ORDER = ("Hernia", "Pneumothorax", "Nodule", "Edema", "Effusion", "Pleural_Thickening", "Cardiomegaly", "Mass",
             "Fibrosis", "Consolidation", "Pneumonia", "Infiltration", "Emphysema", "Atelectasis")
# vindr_data.ipynb keeps the labels with >= 50 majority-positive training images, ascending by that count
VINDR_LABELS = ("Pneumothorax", "Atelectasis", "Mediastinal shift", "Consolidation", "Lung tumor", "ILD",
                "Calcification", "Infiltration", "Other lesion", "Nodule/Mass", "Pneumonia", "Tuberculosis",
                "Lung Opacity", "Pleural effusion", "Pleural thickening", "Pulmonary fibrosis", "Cardiomegaly",
                "Aortic enlargement", "Other diseases")
ECHO_LABELS = ("slvh", "dlv", "heart_transplant", "lung_transplant", "pacemaker_or_icd")
MEDMOD_PHENOTYPES = (
    "Acute and unspecified renal failure", "Acute cerebrovascular disease", "Acute myocardial infarction",
    "Cardiac dysrhythmias", "Chronic kidney disease", "Chronic obstructive pulmonary disease and bronchiectasis",
    "Complications of surgical procedures or medical care", "Conduction disorders",
    "Congestive heart failure; nonhypertensive", "Coronary atherosclerosis and other heart disease",
    "Diabetes mellitus with complications", "Diabetes mellitus without complication", "Disorders of lipid metabolism",
    "Essential hypertension", "Fluid and electrolyte disorders", "Gastrointestinal hemorrhage",
    "Hypertension with complications and secondary hypertension", "Other liver diseases",
    "Other lower respiratory disease", "Other upper respiratory disease", "Pleurisy; pneumothorax; pulmonary collapse",
    "Pneumonia (except that caused by tuberculosis or sexually transmitted disease)",
    "Respiratory failure; insufficiency; arrest (adult)", "Septicemia (except in labor)", "Shock")
MEDMOD_MORTALITY = ("mortality_inunit", "mortality", "mortality_inhospital")


# ---- shared steps ----

def holdout(rows: np.ndarray, fraction: float, source, stratify=None) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) `rows`, each in the order the original's `train_test_split(..., test_size=fraction,
    random_state=42, stratify=...)` returns them."""
    try:
        return train_test_split(rows, test_size=fraction, random_state=SEED, stratify=stratify)
    except ValueError as err:  # e.g. a class with one member cannot be stratified
        raise DatasetFormatError(f"{source}: cannot hold out {fraction:g} of {len(rows)} rows: {err}") from None


def three_way(y: np.ndarray, test: float, val: float, source) -> dict[str, np.ndarray]:
    """The original's two stratified cuts: `test` of all rows, then `val` of the rest (rows in split order)."""
    rest, test_rows = holdout(np.arange(len(y)), test, source, y)
    train_rows, val_rows = holdout(rest, val, source, y[rest])
    return {"train": train_rows, "val": val_rows, "test": test_rows}


def folder(root: Path, *candidates: str) -> Path:
    """The first existing folder root/candidate (releases unpack with and without an extra level)."""
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    raise DatasetFormatError(f"{root}: no folder {' or '.join(repr(c) for c in candidates)}")


def images_in(path: Path, suffixes=IMAGE_SUFFIXES) -> list[Path]:
    """The image files of one folder, sorted by name (the original listed folders with os.listdir, in an order it
    did not record)."""
    if not path.is_dir():
        raise DatasetFormatError(f"{path}: no such folder")
    return sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes and p.is_file())


def binary_column(df: pd.DataFrame, column: str, source) -> np.ndarray:
    """A 0/1 column as int64; blank cells are 0, as the original's ChestXrayDataset fills them."""
    codes = parse_codes(df, [column], source, allow_blank=True)[:, 0]  # (N,), NaN where blank
    return np.nan_to_num(codes).astype(np.int64)


def labelled(paths, splits: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> pd.DataFrame:
    """The classification table: for each split in order its rows of `paths` and of every label column."""
    paths = np.asarray([str(p) for p in paths], dtype=object)
    parts = [pd.DataFrame({"path": paths[rows], "split": name, **{k: np.asarray(v)[rows] for k, v in labels.items()}})
             for name, rows in splits.items()]
    return pd.concat(parts, ignore_index=True)


def relative(paths, root: Path) -> list[str]:
    return [PurePosixPath(Path(p).relative_to(root)).as_posix() for p in paths]


# ---- binary ----

def covidx(root: Path) -> pd.DataFrame:
    """COVID: COVIDx CXR-4 (Kaggle `andyczhao/covidx-cxr2`, version 9): `train.txt`, `val.txt`, `test.txt` (fields
    patient id, file name, positive / negative, source, space-separated, no header) and the images in `train/`,
    `val/`, `test/`. Rule (`Data/covid_data.ipynb`): the three lists are pooled in that order and re-split
    stratified on the label, 20% test, then 10% of the rest val; seed 42."""
    names = ["Patient ID", "Path", "Label", "Data Source"]
    lists = [read_table(root / f"{s}.txt", names, sep=" ", names=names).assign(folder=s)
             for s in ("train", "val", "test")]
    df = pd.concat(lists, ignore_index=True)
    for txt in lists:
        bad = ~txt["Label"].str.strip().isin(("positive", "negative")).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DatasetFormatError(f"{root / txt['folder'].iloc[0]}.txt: line {i + 1}: expected positive or "
                                     f"negative in field 3, found {txt['Label'].iloc[i]!r}")
    y = (df["Label"].str.strip() == "positive").to_numpy().astype(np.int64)
    splits = three_way(y, 0.2, 0.1, root / "train.txt + val.txt + test.txt")
    return labelled(df["folder"] + "/" + df["Path"].str.strip(), splits, {"COVID": y})


def pneumonia(root: Path) -> pd.DataFrame:
    """PNE: Chest X-Ray Images (Pneumonia) (Kaggle `paultimothymooney/chest-xray-pneumonia`), the `chest_xray/`
    folder: `train/`, `val/`, `test/`, each with `NORMAL/` and `PNEUMONIA/`. Rule (`Data/pne_data.ipynb`): every image
    pooled (test, train, val; NORMAL then PNEUMONIA) and re-split stratified, 20% test, then 10% of the rest val;
    seed 42. The original took its rows from os.listdir of the release's nested `chest_xray/chest_xray/` copy, in an
    order it did not record, keyed by file name, and counted every entry (4,274 PNEUMONIA + 1,583 NORMAL = 5,857;
    the three folders hold 5,856 images): pacx lists image files sorted by name, so its split can differ from the
    original's."""
    paths, y = [], []
    for split in ("test", "train", "val"):
        for label, cls in enumerate(("NORMAL", "PNEUMONIA")):
            found = images_in(root / split / cls)
            paths += found
            y += [label] * len(found)
    y = np.array(y, dtype=np.int64)
    return labelled(relative(paths, root), three_way(y, 0.2, 0.1, root), {"PNEUMONIA": y})


def shenzhen(root: Path) -> pd.DataFrame:
    """TB: the Shenzhen tuberculosis set (Kaggle `raddar/tuberculosis-chest-xrays-shenzhen`): `shenzhen_metadata.csv`
    (`study_id` = file name, `findings`) and the images in `images/images/` (or `images/`). Label: findings other
    than "normal" (`Data/tb_data.ipynb`; 336 TB, 326 normal). Split: stratified, 20% test, then 15% of the rest val;
    seed 42 (449 / 80 / 133 images)."""
    csv = root / "shenzhen_metadata.csv"
    df = read_table(csv, ["study_id", "findings"])
    y = (df["findings"].str.strip() != "normal").to_numpy().astype(np.int64)
    images = folder(root, "images/images", "images").relative_to(root).as_posix()
    return labelled(images + "/" + df["study_id"].str.strip(), three_way(y, 0.2, 0.15, csv), {"TB": y})


def chexchonet(root: Path) -> pd.DataFrame:
    """CHEXCHONET: CheXchoNet 1.0.0 (PhysioNet, credentialed): `metadata.csv` (`cxr_filename`, `composite_slvh_dlv`,
    ...) and the images in `cxrs/` (the original moved them to `images/`, also accepted). Label: composite_slvh_dlv
    (`Data/data_modules.py`; `Stage3_CL.py` names it SLVH_DLV_Positive). Split (`Data/chexchonet_data.ipynb`):
    image-wise, stratified, 20% test, then 10% of the rest val; seed 42. A patient with several radiographs can
    land in two splits; the ECHO task splits by patient."""
    csv = root / "metadata.csv"
    df = read_table(csv, ["cxr_filename", "composite_slvh_dlv"])
    y = binary_column(df, "composite_slvh_dlv", csv)
    images = folder(root, "cxrs", "images").relative_to(root).as_posix()
    paths = images + "/" + df["cxr_filename"].str.strip()
    return labelled(paths, three_way(y, 0.2, 0.1, csv), {"SLVH_DLV_Positive": y})


# ---- multiclass ----

def covidqu(root: Path) -> pd.DataFrame:
    """COVIDQU: COVID-QU-Ex (Kaggle `anasmohammedtahir/covidqu`), its `Lung Segmentation Data/Lung Segmentation
    Data/` folder: `Train/`, `Val/`, `Test/`, each with `COVID-19/`, `Non-COVID/`, `Normal/` holding `images/`.
    The class is the folder; the split is the release's (`Data/covidqu_data.ipynb`: 21,715 / 5,417 / 6,788)."""
    paths, classes, splits, start = [], [], {}, 0
    for split in ("Train", "Val", "Test"):
        for cls in sorted(COVIDQU_CLASSES):
            found = images_in(root / split / cls / "images")
            paths += found
            classes += [cls] * len(found)
        splits[split.lower()], start = np.arange(start, len(paths)), len(paths)
    return labelled(relative(paths, root), splits, {"class": classes})


def chestx6(root: Path) -> pd.DataFrame:
    """CHESTX6: Chest X-Ray 6 Classes (Kaggle `mohamedasak/chest-x-ray-6-classes-dataset`), its `chest-xray/` folder:
    `train/`, `val/`, `test/`, each with one folder per class (CHESTX6_CLASSES). The class is the folder (the
    original's one-hot columns, in alphabetical order, argmax-ed by `Modules/cl_lit.py`); the split is the
    release's (`Data/chestx6_data.ipynb`: 14,551 / 1,748 / 1,737)."""
    paths, classes, splits, start = [], [], {}, 0
    for split in ("train", "val", "test"):
        for cls in CHESTX6_CLASSES:
            found = images_in(root / split / cls)
            paths += found
            classes += [cls] * len(found)
        splits[split], start = np.arange(start, len(paths)), len(paths)
    return labelled(relative(paths, root), splits, {"class": classes})


# ---- multilabel ----

def nih(root: Path) -> pd.DataFrame:
    """NIH: NIH ChestX-ray14 (Kaggle `nih-chest-xrays/data` or the NIH box release): `Data_Entry_2017.csv`,
    `train_val_list.txt`, `test_list.txt`, images in `images/` or `images_0XX/images/` (read by
    `pacx.data.cxr_datasets.NIHChestXray14`). Rule (`Data/nih_data.ipynb`): test is the official test list; the
    official train_val rows, in Data_Entry order, are split image-wise (not by patient, not stratified), 15% val;
    seed 42. Labels in the original's column order (NIH_ORDER)."""
    entries = read_table(root / "Data_Entry_2017.csv", ["Image Index"])["Image Index"]
    order = {name: i for i, name in enumerate(entries)}
    columns = [NIH_LABELS.index(name) for name in NIH_ORDER]
    parts = {}
    for split in ("train_val", "test"):
        data = NIHChestXray14(root, split, check_files=False)
        rows = np.argsort([order[i] for i in data.ids], kind="stable")  # Data_Entry order, as the notebook's isin
        parts[split] = (np.asarray(data.paths, dtype=object)[rows], data.labels[rows][:, columns])
    train, val = holdout(np.arange(len(parts["train_val"][0])), 0.15, root / "train_val_list.txt")
    paths = np.concatenate([parts["train_val"][0], parts["test"][0]])
    labels = np.concatenate([parts["train_val"][1], parts["test"][1]]).astype(np.int64)
    test = np.arange(len(parts["train_val"][0]), len(paths))
    return labelled(relative(paths, root), {"train": train, "val": val, "test": test},
                    {name: labels[:, j] for j, name in enumerate(NIH_ORDER)})


def vindr(root: Path) -> pd.DataFrame:
    """VINDR: VinDr-CXR image labels (PhysioNet `vindr-cxr` 1.0.0, `annotations/image_labels_{train,test}.csv`, here
    or in `annotations/`) with the images of Kaggle `awsaf49/vinbigdata-512-image-dataset` (its `vinbigdata/`
    folder: `train/<image_id>.png`, `test/<image_id>.png`; PhysioNet's DICOMs also work), read by
    `pacx.data.cxr_datasets.VinDrCXR`. Rule (`Data/vindr_data.ipynb`): a training image is positive for a label
    when at least half of its readers marked it (`mean >= 0.5`; every training image has 3 readers, so this is
    VinDrCXR's strict majority); the 19 VINDR_LABELS; val is 10% of the training images, sorted by id, unstratified;
    seed 42; test is the official test set (one consensus row per image), whose "Other disease" column is the
    training file's "Other diseases"."""
    labels = root if (root / "image_labels_train.csv").is_file() else root / "annotations"
    train = VinDrCXR(labels / "image_labels_train.csv", root / "train", label_names=VINDR_LABELS, check_files=False)
    test_csv = labels / "image_labels_test.csv"
    header = read_table(test_csv, ["image_id"]).columns
    names = ["Other disease" if n == "Other diseases" and n not in header else n for n in VINDR_LABELS]
    test = VinDrCXR(test_csv, root / "test", label_names=names, check_files=False)
    order = np.argsort(train.ids, kind="stable")  # the notebook's groupby("image_id") sorts the ids
    _, val_ids = holdout(train.ids[order], 0.1, labels / "image_labels_train.csv")
    is_val = np.isin(train.ids[order], val_ids)
    paths = [train.paths[i] for i in order] + list(test.paths)
    y = np.concatenate([train.labels[order], test.labels]).astype(np.int64)
    n = len(order)
    splits = {"train": np.flatnonzero(~is_val), "val": np.flatnonzero(is_val), "test": np.arange(n, len(paths))}
    return labelled(relative(paths, root), splits, {name: y[:, j] for j, name in enumerate(VINDR_LABELS)})


def echo(root: Path) -> pd.DataFrame:
    """ECHO: CheXchoNet 1.0.0 (PhysioNet), laid out as for `chexchonet`. Labels ECHO_LABELS. Rule
    (`Scripts/chexchonet/echo_pp.py`): by patient; a patient is positive when any of their radiographs has
    composite_slvh_dlv; patients (sorted by id) split stratified, 20% held out, then half of those val, half test;
    seed 42; each split keeps metadata.csv's row order. (The original then dropped rows whose image was missing;
    pacx refuses a missing image instead.)"""
    csv = root / "metadata.csv"
    df = read_table(csv, ["patient_id", "cxr_filename", "composite_slvh_dlv", *ECHO_LABELS])
    composite = binary_column(df, "composite_slvh_dlv", csv)
    patients = pd.Series(composite).groupby(df["patient_id"].str.strip().to_numpy()).max()  # sorted by patient id
    ids, y = patients.index.to_numpy(), patients.to_numpy()
    train, held = holdout(np.arange(len(ids)), 0.2, csv, y)
    val, test = holdout(held, 0.5, csv, y[held])
    patient_split = {p: s for s, rows in (("train", train), ("val", val), ("test", test)) for p in ids[rows]}
    split = df["patient_id"].str.strip().map(patient_split).to_numpy()
    splits = {s: np.flatnonzero(split == s) for s in ("train", "val", "test")}
    images = folder(root, "cxrs", "images").relative_to(root).as_posix()
    return labelled(images + "/" + df["cxr_filename"].str.strip(), splits,
                    {name: binary_column(df, name, csv) for name in ECHO_LABELS})


def medmod(root: Path, label_names: tuple[str, ...]) -> pd.DataFrame:
    """MedMod (MIMIC-IV + MIMIC-CXR-JPG, PhysioNet, credentialed; no ready-made release): `medmod_final.csv`, the
    original's admissions table (built by the MedMod fork's mimic4extract steps 1-2, `Scripts/medmod/
    exclude_symile.py` and `link_mimic_cxr_jpg.py`: the 25 phenotype columns, the 3 mortality columns and `cxr_path`
    = `pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg`), next to MIMIC-CXR-JPG's `files/` folder. Rule
    (`Scripts/medmod/split_medmod.py` `label_split`): stratified on "Other upper respiratory disease" (the sparsest
    label), 20% test, then 0.1 / 0.8 of the rest val; seed 42."""
    csv = root / "medmod_final.csv"
    strata = "Other upper respiratory disease"
    df = read_table(csv, ["cxr_path", strata, *label_names])
    splits = three_way(binary_column(df, strata, csv), 0.2, 0.1 / (1 - 0.2), csv)
    return labelled("files/" + df["cxr_path"].str.strip(), splits,
                    {name: binary_column(df, name, csv) for name in label_names})


def medmod_phenotypes(root: Path) -> pd.DataFrame:
    """MEDMOD-PHYS: the 25 MedMod phenotypes (MEDMOD_PHENOTYPES), see `medmod`."""
    return medmod(root, MEDMOD_PHENOTYPES)


def medmod_mortality(root: Path) -> pd.DataFrame:
    """MEDMOD-MORT: in-unit, overall and in-hospital mortality (MEDMOD_MORTALITY), see `medmod`."""
    return medmod(root, MEDMOD_MORTALITY)
