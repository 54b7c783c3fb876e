"""Tests for pacx/data/datasets.py: tiny fake data sets of each layout written to tmp_path, read back and compared with
hand-made label matrices (CheXpert policies, NIH multi-hot and splits, VinDr majority vote), plus each bad input
raising a one-line DatasetFormatError that names the file and the line / column."""
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

from pacx.data.cxr_datasets import CHEXPERT_LABELS, NIH_LABELS, CheXpert, NIHChestXray14, VinDrCXR
from pacx.data.datasets import ImageCSV, ImageFolderList, SegmentationCSV
from pacx.data.symile import SymileMIMIC
from pacx.data.tables import DatasetFormatError
from pacx.errors import DataError


def png(path: Path, value: int, size=(5, 4)) -> Path:
    """A constant gray PNG (W, H) = size, so an item can be identified by its pixel value."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, np.uint8)).save(path)
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def raises(fn, *fragments):
    """fn() must raise a one-line DatasetFormatError containing every fragment."""
    with pytest.raises(DatasetFormatError) as err:
        fn()
    msg = str(err.value)
    assert "\n" not in msg
    for f in fragments:
        assert str(f) in msg, f"{f!r} not in {msg!r}"
    assert isinstance(err.value, DataError) and isinstance(err.value, ValueError)
    return msg


# ---- generic ----

def test_image_csv_tasks_and_paths(tmp_path):
    png(tmp_path / "img" / "a.png", 10)
    png(tmp_path / "img" / "b.png", 20)
    absolute = png(tmp_path / "elsewhere" / "c.png", 30)
    csv = write_csv(tmp_path / "d.csv", [
        {"file": "img/a.png", "y": 1, "z": 0, "cls": 2, "name": "tb"},
        {"file": "img/b.png", "y": 0, "z": 1, "cls": 0, "name": "normal"},
        {"file": str(absolute), "y": 1, "z": 1, "cls": 1, "name": "covid"},
    ])
    ds = ImageCSV(csv, "file", "y")
    assert len(ds) == 3
    assert [int(ds[i]["image"][0, 0, 0]) for i in range(3)] == [10, 20, 30]
    assert ds[0]["image"].shape == (3, 4, 5) and ds[0]["image"].dtype == torch.uint8
    assert torch.equal(ds[1]["label"], torch.tensor([0.0]))
    ml = ImageCSV(csv, "file", ["y", "z"], task="multilabel")
    np.testing.assert_array_equal(ml.labels, [[1, 0], [0, 1], [1, 1]])
    mc = ImageCSV(csv, "file", "cls", task="multiclass")
    assert [int(mc[i]["label"]) for i in range(3)] == [2, 0, 1] and mc[0]["label"].dtype == torch.int64
    named = ImageCSV(csv, "file", "name", task="multiclass", classes=["normal", "covid", "tb"])
    np.testing.assert_array_equal(named.labels, [2, 0, 1])
    unlabelled = ImageCSV(csv, "file", transform=lambda x: x.float() / 255)
    item = unlabelled[2]
    assert "label" not in item and torch.allclose(item["image"], torch.full((3, 4, 5), 30 / 255))
    # root given explicitly: relative paths are taken under it, not under the CSV's folder
    moved = write_csv(tmp_path / "sub" / "m.csv", [{"file": "a.png", "y": 1}])
    assert int(ImageCSV(moved, "file", "y", root=tmp_path / "img")[0]["image"][0, 0, 0]) == 10


def test_image_csv_bad_inputs(tmp_path):
    png(tmp_path / "a.png", 1)
    csv = write_csv(tmp_path / "d.csv", [
        {"file": "a.png", "y": 1, "s": "yes", "two": 2, "blank": "", "cls": "1.5"},
        {"file": "a.png", "y": 0, "s": "no", "two": 0, "blank": 1, "cls": "0"},
    ])
    raises(lambda: ImageCSV(csv, "path", "y"), str(csv), "'path'", "found columns: file, y")
    raises(lambda: ImageCSV(csv, "file", "s"), str(csv), "line 2", "'s'", "expected 0 or 1", "'yes'")
    raises(lambda: ImageCSV(csv, "file", ["y", "two"], task="multilabel"), "line 2", "'two'", "'2'")
    raises(lambda: ImageCSV(csv, "file", "blank"), "line 2", "'blank'", "''")
    raises(lambda: ImageCSV(csv, "file", "cls", task="multiclass"), "line 2", "'cls'", "integer class id", "'1.5'")
    raises(lambda: ImageCSV(csv, "file", "s", task="multiclass", classes=["no"]), "line 2", "'yes'")
    raises(lambda: ImageCSV(csv, "file", ["y", "two"], task="binary"), "one label column")
    raises(lambda: ImageCSV(csv, "file", "y", task="regression"), "regression")
    missing = write_csv(tmp_path / "m.csv", [{"file": "a.png", "y": 1}, {"file": "gone.png", "y": 0}])
    raises(lambda: ImageCSV(missing, "file", "y"), str(missing), "1 of 2 files", "line 3", "gone.png")
    assert len(ImageCSV(missing, "file", "y", check_files=False)) == 2
    raises(lambda: ImageCSV(tmp_path / "nope.csv", "file"), "nope.csv", "no such file")
    (tmp_path / "empty.csv").write_text("")
    raises(lambda: ImageCSV(tmp_path / "empty.csv", "file"), "empty.csv", "not a readable CSV")
    (tmp_path / "short.csv").write_text("file,y\na.png\n")  # a row shorter than the header
    raises(lambda: ImageCSV(tmp_path / "short.csv", "file", "y"), "line 2", "'y'", "''")
    (tmp_path / "blank.csv").write_text("file,y\na.png,1\n ,0\n")
    raises(lambda: ImageCSV(tmp_path / "blank.csv", "file", "y"), "line 3", "'file'", "a file path")
    (tmp_path / "bom.csv").write_bytes("file,y\na.png,1\n".encode("utf-8-sig"))  # spreadsheet export
    assert ImageCSV(tmp_path / "bom.csv", "file", "y").labels.tolist() == [[1.0]]


def test_image_folder_list_sorted_recursive(tmp_path):
    png(tmp_path / "b" / "x.png", 2)
    png(tmp_path / "a" / "deep" / "y.PNG", 1)
    Image.fromarray(np.full((4, 5), 3, np.uint8)).save(tmp_path / "c.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = ImageFolderList(tmp_path)
    assert [Path(p).relative_to(tmp_path).as_posix() for p in ds.paths] == ["a/deep/y.PNG", "b/x.png", "c.jpg"]
    assert [int(ds[i]["image"][0, 0, 0]) for i in range(2)] == [1, 2]
    (tmp_path / "empty").mkdir()
    raises(lambda: ImageFolderList(tmp_path / "empty"), "empty", "no image files")
    raises(lambda: ImageFolderList(tmp_path / "missing"), "missing", "no such folder")


def test_image_folder_finds_dicom_files_without_extension(tmp_path):
    """A PACS export: DICOM files named by UID ('1.2.840...' ends in a number, not an extension) or with no extension
    at all, beside DICOMDIR (the export's index, no image) and other files. Found by the 'DICM' marker, read as the
    same image written with a .dcm name."""
    pytest.importorskip("pydicom")
    from test_images import write_dicom

    pixels = np.arange(48, dtype=np.uint16).reshape(6, 8) * 80  # up to 3760: within 12 bits
    write_dicom(tmp_path / "ref.dcm", pixels, 12)
    export = tmp_path / "export"
    (export / "S1").mkdir(parents=True)
    for name in ("S1/IM00001", "S1/1.2.840.113619.2.55.3.604688119"):
        (export / name).write_bytes((tmp_path / "ref.dcm").read_bytes())
    (export / "DICOMDIR").write_bytes((tmp_path / "ref.dcm").read_bytes())  # an index by name: skipped unread
    (export / "README").write_text("exported by the PACS")
    ds = ImageFolderList(export)
    assert [Path(p).relative_to(export).as_posix() for p in ds.paths] == ["S1/1.2.840.113619.2.55.3.604688119",
                                                                           "S1/IM00001"]
    lo, hi = pixels.min(), pixels.max()  # pacx.data.images: a 12-bit image is min-max scaled to 8 bits
    expected = torch.from_numpy(np.rint((pixels - lo) / (hi - lo) * 255).astype(np.uint8)).expand(3, -1, -1)
    for i in range(2):
        assert torch.equal(ds[i]["image"], expected)


# ---- CheXpert ----

def chexpert_tree(tmp_path: Path, codes: list[list]) -> Path:
    """CheXpert-v1.0-small/{train.csv, train/patientK/study1/view1_frontal.jpg}, pixel value = 10 * (K + 1)."""
    data = tmp_path / "CheXpert-v1.0-small"
    rows = []
    for k, row in enumerate(codes):
        rel = f"train/patient{k:05d}/study1/view1_frontal.jpg"
        Image.fromarray(np.full((4, 4), 10 * (k + 1), np.uint8)).save(png(data / rel, 0))
        rows.append({"Path": f"CheXpert-v1.0-small/{rel}", "Sex": "Male", "Frontal/Lateral": "Frontal",
                     **{name: v for name, v in zip(CHEXPERT_LABELS, row)}})
    return write_csv(data / "train.csv", rows)


def test_chexpert_uncertainty_policies_and_roots(tmp_path):
    # first 4 label columns vary, the other 10 are blank; "" = blank
    codes = [[1, 0, -1, ""] + [""] * 10, [-1, "", 1, 0] + [""] * 10, ["", -1, 0, 1] + [""] * 10]
    csv = chexpert_tree(tmp_path, codes)
    first4 = slice(0, 4)
    ds = CheXpert(csv)  # u_ones, blank -> 0
    np.testing.assert_array_equal(ds.labels[:, first4], [[1, 0, 1, 0], [1, 0, 1, 0], [0, 1, 0, 1]])
    assert (ds.labels[:, 4:] == 0).all() and (ds.label_mask == 1).all()
    zeros = CheXpert(csv, uncertain="u_zeros")
    np.testing.assert_array_equal(zeros.labels[:, first4], [[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    ignore = CheXpert(csv, uncertain="ignore", blank="ignore")
    np.testing.assert_array_equal(ignore.labels[:, first4], [[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    np.testing.assert_array_equal(ignore.label_mask[:, first4], [[1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])
    assert (ignore.label_mask[:, 4:] == 0).all()
    item = ignore[1]
    assert item["label"].shape == (14,) and int(item["image"][0, 0, 0]) == 20
    batch = default_collate([ignore[0], ignore[1]])
    assert batch["image"].shape == (2, 3, 4, 4) and batch["label_mask"].shape == (2, 14)
    # the three root conventions all find the same files
    for root in (None, tmp_path, tmp_path / "CheXpert-v1.0-small"):
        assert CheXpert(csv, root=root).paths == ds.paths
    images_only = CheXpert(csv, label_columns=())
    assert images_only.labels.shape == (3, 0)


def test_chexpert_bad_inputs(tmp_path):
    csv = chexpert_tree(tmp_path, [[1] * 14, [0] * 13 + [2]])
    raises(lambda: CheXpert(csv), str(csv), "line 3", "'Support Devices'", "1 or 0 or -1 or blank", "'2'")
    raises(lambda: CheXpert(csv, uncertain="u_maybe"), "u_maybe")
    df = pd.read_csv(csv)
    df.loc[1, "Support Devices"] = 1
    df.loc[1, "Path"] = df.loc[0, "Path"]
    df.to_csv(csv, index=False)
    raises(lambda: CheXpert(csv), "line 3", "'Path'", "first seen on line 2")
    df.drop(columns=["Edema"]).to_csv(csv, index=False)
    raises(lambda: CheXpert(csv), str(csv), "missing column 'Edema'")


# ---- NIH ChestX-ray14 ----

def nih_tree(tmp_path: Path) -> Path:
    entries = [
        ("00000001_000.png", "Cardiomegaly", 1),
        ("00000001_001.png", "Cardiomegaly|Emphysema", 1),
        ("00000002_000.png", "No Finding", 2),
        ("00000003_000.png", "Hernia|Effusion|Pleural_Thickening", 3),
        ("00000004_000.png", "Atelectasis", 4),
    ]
    for k, (name, _, _) in enumerate(entries):
        png(tmp_path / f"images_00{1 + k % 2}" / "images" / name, 50 + k)  # split over two archive folders
    write_csv(tmp_path / "Data_Entry_2017.csv", [
        {"Image Index": n, "Finding Labels": f, "Follow-up #": 0, "Patient ID": p} for n, f, p in entries
    ])
    (tmp_path / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000004_000.png\n")
    (tmp_path / "test_list.txt").write_text("00000002_000.png\n\n00000003_000.png\n")
    return tmp_path


def test_nih_multi_hot_and_splits(tmp_path):
    root = nih_tree(tmp_path)
    train = NIHChestXray14(root, "train_val")
    test = NIHChestXray14(root, "test")
    assert list(train.ids) == ["00000001_000.png", "00000001_001.png", "00000004_000.png"]
    assert list(test.ids) == ["00000002_000.png", "00000003_000.png"]
    assert set(train.ids).isdisjoint(test.ids) and len(NIHChestXray14(root, "all")) == 5

    def hot(*names):
        return [1.0 if n in names else 0.0 for n in NIH_LABELS]

    np.testing.assert_array_equal(train.labels, [hot("Cardiomegaly"), hot("Cardiomegaly", "Emphysema"),
                                                 hot("Atelectasis")])
    np.testing.assert_array_equal(test.labels, [hot(), hot("Hernia", "Effusion", "Pleural_Thickening")])
    assert list(train.patient_ids) == ["1", "1", "4"]
    assert int(test[1]["image"][0, 0, 0]) == 53 and test[1]["id"] == "00000003_000.png"


def test_nih_bad_inputs(tmp_path):
    root = nih_tree(tmp_path)
    csv = root / "Data_Entry_2017.csv"
    df = pd.read_csv(csv)
    df.loc[3, "Finding Labels"] = "Hernia|Cardiomegally"
    df.to_csv(csv, index=False)
    raises(lambda: NIHChestXray14(root, "all"), str(csv), "line 5", "'Finding Labels'", "'Cardiomegally'")
    df.loc[3, "Finding Labels"] = "Hernia"
    df.loc[4, "Image Index"] = df.loc[0, "Image Index"]
    df.to_csv(csv, index=False)
    raises(lambda: NIHChestXray14(root, "all"), "line 6", "'Image Index'", "'00000001_000.png'")
    nih_tree(tmp_path)
    (root / "test_list.txt").write_text("00000002_000.png\n00000009_000.png\n")
    raises(lambda: NIHChestXray14(root, "test"), "test_list.txt", "line 2", "00000009_000.png")
    raises(lambda: NIHChestXray14(root, "val"), "'val'")
    (root / "images_001" / "images" / "00000004_000.png").unlink()  # 3rd of the split, line 6 of the CSV
    raises(lambda: NIHChestXray14(root, "train_val"), "1 of 3 files", "line 6", "00000004_000.png")


# ---- VinDr-CXR ----

VINDR_COLUMNS = ["Aortic enlargement", "Cardiomegaly", "Nodule/Mass", "No finding"]


def vindr_tree(tmp_path: Path) -> Path:
    readers = [  # image_id, rad_id, Aortic, Cardiomegaly, Nodule, No finding
        ("img_a", "R1", 1, 1, 0, 0), ("img_a", "R2", 1, 0, 0, 0), ("img_a", "R3", 0, 1, 1, 0),
        ("img_b", "R4", 1, 0, 0, 0), ("img_b", "R2", 0, 0, 1, 0), ("img_b", "R5", 0, 0, 0, 1),
        ("img_c", "R1", 0, 1, 0, 0), ("img_c", "R3", 0, 1, 0, 0), ("img_c", "R6", 0, 0, 0, 1),
    ]
    images = tmp_path / "train"
    png(images / "img_a.png", 1)
    png(images / "img_b.png", 2)
    (images / "img_c.dicom").write_bytes(b"")  # only the path is checked here
    rows = [dict(zip(["image_id", "rad_id"] + VINDR_COLUMNS, r)) for r in readers]
    return write_csv(tmp_path / "image_labels_train.csv", rows)


def test_vindr_majority_vote_and_label_selection(tmp_path):
    csv = vindr_tree(tmp_path)
    ds = VinDrCXR(csv, tmp_path / "train", min_positives=1)
    assert list(ds.ids) == ["img_a", "img_b", "img_c"]
    # majority of 3: a: aortic 2/3, cardio 2/3, nodule 1/3; b: all 1/3; c: cardio 2/3, no finding 1/3
    assert ds.label_names == ["Aortic enlargement", "Cardiomegaly"]  # Nodule never wins; No finding excluded
    np.testing.assert_array_equal(ds.labels, [[1, 1], [0, 0], [0, 1]])
    assert VinDrCXR(csv, tmp_path / "train", min_positives=2).label_names == ["Cardiomegaly"]
    fixed = VinDrCXR(csv, tmp_path / "train", label_names=["Nodule/Mass", "Cardiomegaly"], exclude=())
    np.testing.assert_array_equal(fixed.labels, [[0, 1], [0, 0], [0, 1]])
    assert [p.name for p in ds.paths] == ["img_a.png", "img_b.png", "img_c.dicom"]
    assert int(ds[1]["image"][0, 0, 0]) == 2 and torch.equal(ds[0]["label"], torch.tensor([1.0, 1.0]))
    # the test CSV: one consensus row per image, no rad_id
    test_csv = write_csv(tmp_path / "image_labels_test.csv", [
        {"image_id": "img_a", **dict(zip(VINDR_COLUMNS, (0, 1, 1, 0)))},
        {"image_id": "img_b", **dict(zip(VINDR_COLUMNS, (1, 0, 0, 0)))},
    ])
    test = VinDrCXR(test_csv, tmp_path / "train", label_names=ds.label_names)
    np.testing.assert_array_equal(test.labels, [[0, 1], [1, 0]])


def test_vindr_bad_inputs(tmp_path):
    csv = vindr_tree(tmp_path)
    raises(lambda: VinDrCXR(csv, tmp_path / "train"), str(csv), ">= 50 positive")
    raises(lambda: VinDrCXR(csv, tmp_path / "train", label_names=["Edema"]), "missing label column 'Edema'")
    df = pd.read_csv(csv, dtype=str)
    df.loc[5, "rad_id"] = "R4"  # img_b read twice by R4
    df.to_csv(csv, index=False)
    raises(lambda: VinDrCXR(csv, tmp_path / "train", min_positives=1), "line 7", "image_id / rad_id", "img_b / R4")
    df.loc[5, "rad_id"] = "R5"
    df.loc[2, "Cardiomegaly"] = "x"
    df.to_csv(csv, index=False)
    raises(lambda: VinDrCXR(csv, tmp_path / "train", min_positives=1), "line 4", "'Cardiomegaly'", "'x'")
    df.loc[2, "Cardiomegaly"] = "1"
    df.to_csv(csv, index=False)
    (tmp_path / "train" / "img_b.png").unlink()
    raises(lambda: VinDrCXR(csv, tmp_path / "train", min_positives=1), "1 of 3 files", "line 5", "img_b.png")


# ---- segmentation ----

def test_segmentation_mask_binarised_and_joint_transform(tmp_path):
    png(tmp_path / "img.png", 90, size=(4, 2))
    Image.fromarray(np.array([[0, 127, 128, 255], [200, 1, 127, 128]], np.uint8)).save(tmp_path / "m.png")
    csv = write_csv(tmp_path / "seg.csv", [{"img_path": "img.png", "mask_path": "m.png"}])
    item = SegmentationCSV(csv)[0]
    assert item["mask"].dtype == torch.float32
    np.testing.assert_array_equal(item["mask"].numpy(), [[[0, 0, 1, 1], [1, 0, 0, 1]]])
    flipped = SegmentationCSV(csv, transform=lambda im, m: (im.flip(-1), m.flip(-1)))[0]
    np.testing.assert_array_equal(flipped["mask"].numpy(), [[[1, 1, 0, 0], [1, 0, 0, 1]]])
    png(tmp_path / "small.png", 255, size=(3, 2))
    bad = write_csv(tmp_path / "bad.csv", [{"img_path": "img.png", "mask_path": "small.png"}])
    with pytest.raises(DatasetFormatError, match="small.png"):
        SegmentationCSV(bad)[0]
    raises(lambda: SegmentationCSV(csv, mask_column="mask"), "missing column 'mask'")


# ---- Symile-MIMIC ----

def symile_tree(tmp_path: Path, split: str, n: int = 4, **override) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "data_npy" / split
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "cxr": rng.standard_normal((n, 3, 8, 8)).astype(np.float32),
        "ecg": np.arange(n * 20 * 12, dtype=np.float32).reshape(n, 1, 20, 12),
        "labs_percentiles": rng.random((n, 50)).astype(np.float32),
        "labs_missingness": (rng.random((n, 50)) > 0.5).astype(np.float32),
        "hadm_id": np.arange(100, 100 + n, dtype=np.int64),
    }
    if split in ("val_retrieval", "test"):
        arrays["hadm_id"] = np.array([100, 101, 102, 101][:n], dtype=np.int64)  # candidates repeat
        arrays["label_hadm_id"] = np.full(n, 100, dtype=np.int64)
        arrays["label"] = (np.arange(n) == 0).astype(np.int64)
    arrays.update(override)
    for name, arr in arrays.items():
        np.save(folder / f"{name}_{split}.npy", arr)
    return tmp_path / "data_npy"


def test_symile_items_match_arrays(tmp_path):
    root = symile_tree(tmp_path, "train")
    ds = SymileMIMIC(root, "train")
    ecg = np.load(root / "train" / "ecg_train.npy")
    item = ds[2]
    assert item["ecg"].shape == (12, 20)
    np.testing.assert_array_equal(item["ecg"].numpy(), ecg[2, 0].T)  # lead c, time t = stored [t, c]
    np.testing.assert_array_equal(item["cxr"].numpy(), np.load(root / "train" / "cxr_train.npy")[2])
    np.testing.assert_array_equal(item["mask"].numpy(), np.load(root / "train" / "labs_missingness_train.npy")[2])
    assert int(item["hadm_id"]) == 102 and "label" not in item
    shifted = SymileMIMIC(root, "train", cxr_transform=lambda x: x + 1)[2]
    assert torch.allclose(shifted["cxr"], item["cxr"] + 1)
    batch = default_collate([ds[0], ds[1]])
    assert batch["ecg"].shape == (2, 12, 20) and batch["labs"].shape == (2, 50)
    blob = pickle.dumps(ds)  # what a spawn/forkserver DataLoader worker receives: file names, not array contents
    assert len(blob) < 2000 and b"hadm_id_train.npy" in blob
    np.testing.assert_array_equal(pickle.loads(blob)[2]["ecg"].numpy(), item["ecg"].numpy())
    test = SymileMIMIC(symile_tree(tmp_path, "test"), "test")
    assert [int(test[i]["label"]) for i in range(4)] == [1, 0, 0, 0] and int(test[3]["label_hadm_id"]) == 100


def test_symile_bad_inputs(tmp_path):
    root = symile_tree(tmp_path, "train", ecg=np.zeros((3, 1, 20, 12), np.float32))
    raises(lambda: SymileMIMIC(root, "train"), "ecg_train.npy", "has 3 rows", "cxr_train.npy has 4")
    root = symile_tree(tmp_path, "train", ecg=np.zeros((4, 20, 12), np.float32))
    raises(lambda: SymileMIMIC(root, "train"), "ecg_train.npy", "expected shape (N, 1, L, 12)", "(4, 20, 12)")
    root = symile_tree(tmp_path, "train", labs_percentiles=np.zeros((4, 49), np.float32))
    raises(lambda: SymileMIMIC(root, "train"), "labs_percentiles_train.npy", "(N, 50)", "(4, 49)")
    root = symile_tree(tmp_path, "train", hadm_id=np.array([7, 8, 9, 8]))
    raises(lambda: SymileMIMIC(root, "train"), "hadm_id_train.npy", "row 3", "repeats row 1")
    mask = np.ones((4, 50), np.float32)
    mask[1, 5] = 2
    root = symile_tree(tmp_path, "train", labs_missingness=mask)
    raises(lambda: SymileMIMIC(root, "train"), "labs_missingness_train.npy", "row 1", "[2.0]")
    root = symile_tree(tmp_path, "val_retrieval")
    (root / "val_retrieval" / "label_val_retrieval.npy").unlink()
    raises(lambda: SymileMIMIC(root, "val_retrieval"), "label_val_retrieval.npy", "no such file")
    (root / "train" / "hadm_id_train.npy").write_bytes(b"garbage")
    raises(lambda: SymileMIMIC(root, "train"), "hadm_id_train.npy", "not a readable .npy")
    raises(lambda: SymileMIMIC(root, "val"), "val", "no such folder")
