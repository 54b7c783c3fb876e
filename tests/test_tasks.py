"""The paper's benchmarks by name (pacx/data/tasks.py): each adapter on a miniature copy of its public release.

Every test writes the release's real file names, folders and CSV headers with a few tiny generated images, then
checks the table the adapter yields against that layout: the images, their labels (written by the test), the class
order, and the splits. Where the original re-splits a release, the expected split is computed here the way the
original's notebook does it (its `train_test_split` calls on its own table, written out in the test), and where the
release has an official split, from the folders the test wrote. Two runs of `evaluate.main([... "--task", ...])`
(TB: binary classification; QATA: segmentation) show the hand-off end to end.
"""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.model_selection import train_test_split

import evaluate
from pacx.data.datasets import ImageCSV
from pacx.data.task_layouts import MEDMOD_MORTALITY, MEDMOD_PHENOTYPES, NIH_ORDER, VINDR_LABELS
from pacx.data.tables import DatasetFormatError
from pacx.data.tasks import BENCHMARKS, read_benchmark, resolve

SEED = 42
rng = np.random.default_rng(0)


def image(path, value=None, size=8):
    """A gray image at `path` (PNG or JPEG by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, (size, size)) if value is None else np.full((size, size), value)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def split_of(table):
    return {s: list(table.loc[table["split"] == s, "path"]) for s in ("train", "val", "test")}


def original_three_way(df, label, test, val):
    """The notebooks' two cuts: train_test_split(df, test_size=test, stratify=label), then val of the rest."""
    train, held = train_test_split(df, test_size=test, stratify=df[label], random_state=SEED)
    train, valid = train_test_split(train, test_size=val, stratify=train[label], random_state=SEED)
    return train, valid, held


def assert_rows(table, expected: dict, column: str, prefix: str = ""):
    """The table's split lists equal the expected DataFrames' `column` (with `prefix`), in order."""
    got = split_of(table)
    for split, df in expected.items():
        assert got[split] == [prefix + p for p in df[column]], split


# ---- binary ----

def test_covidx_pools_the_three_lists_and_resplits_stratified(tmp_path):
    lines, rows = {}, []
    for split, n in (("train", 12), ("val", 4), ("test", 4)):
        lines[split] = []
        for i in range(n):
            name, label = f"{split}-{i:02d}.png", ("positive" if i % 3 else "negative")
            image(tmp_path / split / name)
            lines[split].append(f"P{i} {name} {label} bimcv")
            rows.append((f"P{i}", name, label, "bimcv", split))
        (tmp_path / f"{split}.txt").write_text("\n".join(lines[split]) + "\n")
    table = read_benchmark("covid", tmp_path)
    # Data/covid_data.ipynb: the three lists concatenated, Label 1 if positive, 20% test then 10% val
    full = pd.DataFrame(rows, columns=["Patient ID", "Path", "Label", "Data Source", "folder"])
    full["Label"] = (full["Label"] == "positive").astype(int)
    full["Path"] = full["folder"] + "/" + full["Path"]
    train, val, test = original_three_way(full, "Label", 0.2, 0.1)
    assert_rows(table, {"train": train, "val": val, "test": test}, "Path")
    assert dict(zip(table["path"], table["COVID"])) == dict(zip(full["Path"], full["Label"]))
    assert (len(train), len(val), len(test)) == (14, 2, 4)

    (tmp_path / "val.txt").write_text("P0 val-00.png maybe bimcv\n")
    with pytest.raises(DatasetFormatError, match=r"val.txt: line 1: expected positive or negative in field 3, "
                                                 r"found 'maybe'.*kaggle.com/datasets/andyczhao/covidx-cxr2"):
        read_benchmark("COVID", tmp_path)


def test_pneumonia_pools_every_folder_and_resplits_stratified(tmp_path):
    root, listed = tmp_path / "chest_xray", []
    for split, n in (("test", 4), ("train", 10), ("val", 2)):
        for cls, label in (("NORMAL", 0), ("PNEUMONIA", 1)):
            for i in range(n if cls == "PNEUMONIA" else n // 2):
                name = f"IM-{i:04d}-0001.jpeg" if label == 0 else f"person{i}_bacteria_{i}.jpeg"
                image(root / split / cls / name)
                listed.append((f"{split}/{cls}/{name}", label))
    (root / "train" / "NORMAL" / ".DS_Store").write_bytes(b"\0")  # not an image
    table = read_benchmark("PNE", root)
    # Data/pne_data.ipynb: {file: label} over test, train, val and NORMAL, PNEUMONIA; 20% test, then 10% val
    df = pd.DataFrame(sorted(listed, key=lambda r: (r[0].split("/")[0], r[1], r[0])), columns=["Path", "Pneumonia"])
    train, val, test = original_three_way(df, "Pneumonia", 0.2, 0.1)
    assert_rows(table, {"train": train, "val": val, "test": test}, "Path")
    assert dict(zip(table["path"], table["PNEUMONIA"])) == dict(listed) and len(table) == 24


def test_shenzhen_labels_findings_and_resplits_stratified(tmp_path):
    rows = []
    for i in range(20):
        label = int(i >= 10)
        study = f"CHNCXR_{i + 1:04d}_{label}.png"
        image(tmp_path / "images" / "images" / study)
        rows.append((study, "Male", "45yrs", "normal" if label == 0 else ("PTB" if i % 2 else "STB,ATB")))
    meta = pd.DataFrame(rows, columns=["study_id", "sex", "age", "findings"])
    meta.to_csv(tmp_path / "shenzhen_metadata.csv", index=False)
    table = read_benchmark("TB", tmp_path)
    # Data/tb_data.ipynb: Label = findings != "normal", 20% test, then 15% val
    meta["Label"] = (meta["findings"] != "normal").astype(int)
    train, val, test = original_three_way(meta, "Label", 0.2, 0.15)
    assert_rows(table, {"train": train, "val": val, "test": test}, "study_id", "images/images/")
    assert list(table["TB"]) == [int(p.split("_")[-1][0]) for p in table["path"]]  # CHNCXR_xxxx_<label>.png


CHEXCHONET_COLUMNS = ["patient_id", "cxr_filename", "cxr_time_offset", "cxr_year", "cxr_path", "cxr_pixel_spacing_x",
                      "cxr_pixel_spacing_y", "age", "sex", "ivsd", "lvpwd", "lvidd", "slvh", "dlv",
                      "composite_slvh_dlv", "heart_transplant", "lung_transplant", "pacemaker_or_icd"]


@pytest.fixture(scope="module")
def chexchonet(tmp_path_factory):
    """metadata.csv + cxrs/: 16 patients with 1-3 radiographs each; a patient's composite label is constant."""
    root, rows = tmp_path_factory.mktemp("chexchonet"), []
    for p in range(16):
        patient = f"{p:032x}"[::-1]  # not in sorted order
        for k in range(1 + p % 3):
            name = f"{patient}_{k:08x}.jpg"
            image(root / "cxrs" / name)
            slvh, dlv = int(p % 4 == 0), int(p % 4 == 1 and k == 0)
            rows.append([patient, name, "4314 days 09:20:05", 2018, f"./cxrs/{name}", 0.2, 0.2, 60, "F", 1.0, 1.0,
                         4.5, slvh, dlv, int(p % 4 in (0, 1)), int(p == 3), 0, int(k == 1)])
    pd.DataFrame(rows, columns=CHEXCHONET_COLUMNS).to_csv(root / "metadata.csv", index=False)
    return root


def test_chexchonet_splits_images_stratified(chexchonet):
    table = read_benchmark("chexchonet", chexchonet)
    # Data/chexchonet_data.ipynb: image-wise, stratified on composite_slvh_dlv, 20% test, then 10% val
    df = pd.read_csv(chexchonet / "metadata.csv")[["cxr_filename", "composite_slvh_dlv"]]
    train, val, test = original_three_way(df, "composite_slvh_dlv", 0.2, 0.1)
    assert_rows(table, {"train": train, "val": val, "test": test}, "cxr_filename", "cxrs/")
    assert list(table["SLVH_DLV_Positive"]) == list(df.set_index("cxr_filename").loc[
        [p.removeprefix("cxrs/") for p in table["path"]], "composite_slvh_dlv"])


def test_echo_splits_by_patient(chexchonet):
    table = read_benchmark("ECHO", chexchonet)
    # Scripts/chexchonet/echo_pp.py: patients (max composite), 20% held out stratified, half of it test
    df = pd.read_csv(chexchonet / "metadata.csv")
    patients = df.groupby("patient_id")["composite_slvh_dlv"].max().reset_index()
    train, held, _, y_held = train_test_split(patients["patient_id"].values, patients["composite_slvh_dlv"].values,
                                              test_size=0.2, stratify=patients["composite_slvh_dlv"].values,
                                              random_state=SEED)
    val, test = train_test_split(held, test_size=0.5, stratify=y_held, random_state=SEED)
    expected = {s: df[df["patient_id"].isin(ids)] for s, ids in (("train", train), ("val", val), ("test", test))}
    assert_rows(table, expected, "cxr_filename", "cxrs/")
    got = table.set_index("path")
    for name in ("slvh", "dlv", "heart_transplant", "lung_transplant", "pacemaker_or_icd"):
        assert list(got.loc["cxrs/" + df["cxr_filename"], name]) == list(df[name]), name
    assert list(BENCHMARKS["ECHO"].labels) == ["slvh", "dlv", "heart_transplant", "lung_transplant",
                                               "pacemaker_or_icd"]


# ---- multiclass ----

COVIDQU_CLASSES = ("COVID-19", "Non-COVID", "Normal")
COVIDQU_NAMES = {"COVID-19": "covid_{}.png", "Non-COVID": "non_COVID ({}).png", "Normal": "Normal ({}).png"}


@pytest.fixture(scope="module")
def covidqu(tmp_path_factory):
    """Lung Segmentation Data/Lung Segmentation Data/{Train,Val,Test}/<class>/{images,lung masks}/; Train/Normal's
    last image has no mask. Returns the folder and [(split, class, image path, mask path or None)]."""
    root, listed = tmp_path_factory.mktemp("covidqu") / "Lung Segmentation Data" / "Lung Segmentation Data", []
    for split, n in (("Train", 3), ("Val", 2), ("Test", 2)):
        for cls in COVIDQU_CLASSES:
            for i in range(1, n + 1):
                name = COVIDQU_NAMES[cls].format(i)
                image(root / split / cls / "images" / name)
                masked = not (split == "Train" and cls == "Normal" and i == n)
                if masked:
                    image(root / split / cls / "lung masks" / name, 255)
                listed.append((split, cls, f"{split}/{cls}/images/{name}",
                               f"{split}/{cls}/lung masks/{name}" if masked else None))
    return root, listed


def test_covidqu_classes_and_official_split(covidqu, tmp_path):
    root, listed = covidqu
    table = read_benchmark("COVIDQU", root)
    assert split_of(table) == {s.lower(): sorted(p for sp, _, p, _ in listed if sp == s)
                               for s in ("Train", "Val", "Test")}
    assert dict(zip(table["path"], table["class"])) == {p: cls for _, cls, p, _ in listed}
    # the evaluate.py options read the written table with the original's ids (covidqu_data.ipynb): Normal 0,
    # COVID-19 1, Non-COVID 2
    options = resolve("covidqu", root, tmp_path)
    assert options["task_type"] == "multiclass" and options["task_name"] == "COVIDQU"
    data = ImageCSV(options["task_csv"][0], options["image_column"], list(options["label_columns"]),
                    options["image_root"], "multiclass", options["classes"])
    ids = {"Normal": 0, "COVID-19": 1, "Non-COVID": 2}
    assert list(data.labels) == [ids[p.split("/")[1]] for p in table["path"]]


def test_covidqu_lung_masks_official_split_skip_unmasked(covidqu):
    root, listed = covidqu
    table = read_benchmark("COVIDQU-SEG", root)
    for split in ("Train", "Val", "Test"):
        want = [(p, m) for sp, _, p, m in listed if sp == split and m is not None]  # class, then name order
        got = table[table["split"] == split.lower()]
        assert list(zip(got["img_path"], got["mask_path"])) == want
    assert len(table) == len(listed) - 1


def test_chestx6_classes_from_folders_official_split(tmp_path):
    root, listed = tmp_path / "chest-xray", []
    classes = ("Covid-19", "Emphysema", "Normal", "Pneumonia-Bacterial", "Pneumonia-Viral", "Tuberculosis")
    for split in ("train", "val", "test"):
        for cls in classes:
            for i in range(2):
                name = f"{cls.upper()}-{i}.jpg"
                image(root / split / cls / name)
                listed.append((split, cls, f"{split}/{cls}/{name}"))
    table = read_benchmark("CHESTX6", root)
    assert split_of(table) == {s: [p for sp, _, p in listed if sp == s] for s in ("train", "val", "test")}
    assert dict(zip(table["path"], table["class"])) == {p: cls for _, cls, p in listed}
    # chestx6_data.ipynb: pd.get_dummies columns (alphabetical) are the class ids
    assert BENCHMARKS["CHESTX6"].labels == tuple(sorted(classes))


# ---- multilabel ----

def test_nih_official_test_list_and_trainval_split(tmp_path):
    findings = ["Cardiomegaly", "Cardiomegaly|Emphysema", "No Finding", "Hernia|Effusion", "Mass", "No Finding",
                "Pleural_Thickening|Atelectasis", "Nodule", "Pneumonia|Infiltration", "Edema", "Fibrosis",
                "Consolidation|Pneumothorax"]
    names = [f"{i // 3 + 1:08d}_{i % 3:03d}.png" for i in range(len(findings))]
    header = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n")
    (tmp_path / "Data_Entry_2017.csv").write_text(header + "".join(
        f"{n},{f},{i % 3},{i // 3 + 1},58,M,PA,2682,2749,0.143,0.143,\n" for i, (n, f) in enumerate(zip(names,
                                                                                                      findings))))
    for i, n in enumerate(names):
        image(tmp_path / f"images_{i % 2 + 1:03d}" / "images" / n)
    test_names = names[1::4]
    trainval = [n for n in names if n not in test_names]
    (tmp_path / "train_val_list.txt").write_text("\n".join(reversed(trainval)) + "\n")  # not Data_Entry order
    (tmp_path / "test_list.txt").write_text("\n".join(test_names) + "\n")
    table = read_benchmark("NIH", tmp_path)
    # nih_data.ipynb: the train_val rows in Data_Entry order (isin), train_test_split(test_size=0.15)
    train, val = train_test_split(pd.DataFrame({"Image Index": trainval}), test_size=0.15, random_state=SEED)
    got = {s: [p.split("/")[-1] for p in paths] for s, paths in split_of(table).items()}
    assert got == {"train": list(train["Image Index"]), "val": list(val["Image Index"]), "test": test_names}
    truth = dict(zip(names, findings))
    for _, row in table.iterrows():
        name = row["path"].split("/")[-1]
        assert row["path"] == f"images_{names.index(name) % 2 + 1:03d}/images/{name}"
        assert {c for c in NIH_ORDER if row[c] == 1} == set(truth[name].split("|")) - {"No Finding"}
    assert list(table.columns[2:]) == list(NIH_ORDER) and NIH_ORDER[:3] == ("Hernia", "Pneumothorax", "Nodule")


VINDR_TRAIN_COLUMNS = [
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture", "Consolidation", "Edema",
    "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity", "Lung cavity", "Lung cyst", "Mediastinal shift",
    "Nodule/Mass", "Pleural effusion", "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis", "Rib fracture",
    "Other lesion", "COPD", "Lung tumor", "Pneumonia", "Tuberculosis", "Other diseases", "No finding"]


def test_vindr_majority_labels_sorted_val_split_renamed_test_column(tmp_path):
    ids = [f"{(i * 7919) % 97:02x}{'ab' * 15}" for i in range(12)]  # 32 hex digits, not in sorted order
    votes = {}  # image -> label -> readers who marked it
    rows = []
    for k, image_id in enumerate(ids):
        image(tmp_path / "train" / f"{image_id}.png")
        marked = {VINDR_LABELS[k % 19]: 2, VINDR_LABELS[(k + 5) % 19]: 1, "Edema": 3}  # 2 of 3, 1 of 3, dropped
        votes[image_id] = marked
        for r in range(3):
            rows.append([image_id, f"R{r + 1}"] + [int(r < marked.get(c, 0)) for c in VINDR_TRAIN_COLUMNS])
    pd.DataFrame(rows, columns=["image_id", "rad_id", *VINDR_TRAIN_COLUMNS]).to_csv(
        tmp_path / "image_labels_train.csv", index=False)
    test_columns = ["Other disease" if c == "Other diseases" else c for c in VINDR_TRAIN_COLUMNS]
    test_ids = [f"{'cd' * 15}{i:02x}" for i in range(3)]
    for i, image_id in enumerate(test_ids):
        image(tmp_path / "test" / f"{image_id}.png")
    test_rows = [[image_id] + [int(c in ("Other disease", VINDR_LABELS[i])) for c in test_columns]
                 for i, image_id in enumerate(test_ids)]
    (tmp_path / "annotations").mkdir()
    (tmp_path / "image_labels_train.csv").rename(tmp_path / "annotations" / "image_labels_train.csv")
    pd.DataFrame(test_rows, columns=["image_id", *test_columns]).to_csv(
        tmp_path / "annotations" / "image_labels_test.csv", index=False)
    table = read_benchmark("VINDR", tmp_path)
    # vindr_data.ipynb: groupby (sorted ids), mean >= 0.5, train_test_split(ids + ".png", test_size=0.1)
    sorted_ids = sorted(ids)
    _, val_ids = train_test_split(np.array([i + ".png" for i in sorted_ids]), test_size=0.1, random_state=SEED)
    got = split_of(table)
    assert got["val"] == [f"train/{i}" for i in sorted(val_ids)]
    assert got["train"] == [f"train/{i}.png" for i in sorted_ids if i + ".png" not in val_ids]
    assert got["test"] == [f"test/{i}.png" for i in test_ids]
    assert list(table.columns[2:]) == list(VINDR_LABELS)
    for _, row in table.iterrows():
        image_id = row["path"].split("/")[1].removesuffix(".png")
        positive = {c for c in VINDR_LABELS if row[c] == 1}
        if row["split"] == "test":
            assert positive == {"Other diseases", VINDR_LABELS[test_ids.index(image_id)]}
        else:
            assert positive == {c for c, n in votes[image_id].items() if n >= 2 and c in VINDR_LABELS}


def test_medmod_stratified_on_the_sparsest_label(tmp_path):
    columns = ["subject_id", "hadm_id", "stay_id", *MEDMOD_MORTALITY, *MEDMOD_PHENOTYPES, "cxr_path"]
    rows = []
    for i in range(24):
        subject, study, dicom = 10000032 + i, 50414267 + i, f"{i:08x}-bc9f6a58-0b3f8d28-11a8df3e-8c8df7f4"
        path = f"p{str(subject)[:2]}/p{subject}/s{study}/{dicom}.jpg"
        image(tmp_path / "files" / path)
        mortality = [int(i % 5 == 0), int(i % 4 == 0), int(i % 6 == 0)]
        phenotypes = [int((i + j) % 7 == 0) for j in range(25)]
        phenotypes[MEDMOD_PHENOTYPES.index("Other upper respiratory disease")] = int(i % 3 == 0)
        rows.append([subject, 20000000 + i, 30000000 + i, *mortality, *phenotypes, path])
    df = pd.DataFrame(rows, columns=columns)
    df.to_csv(tmp_path / "medmod_final.csv", index=False)
    # Scripts/medmod/split_medmod.py label_split: 20% test, then 0.1 / 0.8 val, stratified on the sparsest label
    train, val, test = original_three_way(df, "Other upper respiratory disease", 0.2, 0.1 / (1 - 0.2))
    for name, labels in (("MEDMOD-PHYS", MEDMOD_PHENOTYPES), ("MEDMOD-MORT", MEDMOD_MORTALITY)):
        table = read_benchmark(name, tmp_path)
        assert_rows(table, {"train": train, "val": val, "test": test}, "cxr_path", "files/")
        assert list(table.columns[2:]) == list(labels) == list(BENCHMARKS[name].labels)
        got = table.set_index("path")
        for label in labels:
            assert list(got.loc["files/" + df["cxr_path"], label]) == list(df[label]), label


# ---- segmentation ----

def test_cxlseg_release_split_and_mask_beside_image(tmp_path):
    rows, want = [], {"train": [], "val": [], "test": []}
    for i, split in enumerate(["train"] * 5 + ["validate", "test", "train", "test", "validate"]):
        subject, study, dicom = 10000032 + 1000000 * (i % 3), 50000000 + i, f"{i:08x}-8c8df7f4"
        folder = f"files/p{str(subject)[:2]}/p{subject}/s{study}"
        image(tmp_path / folder / f"{dicom}.jpg")
        image(tmp_path / folder / f"{dicom}-mask.jpg", 255)
        rows.append((dicom, subject, study, split))
        want["val" if split == "validate" else split].append((f"{folder}/{dicom}.jpg", f"{folder}/{dicom}-mask.jpg"))
    pd.DataFrame(rows, columns=["dicom_id", "subject_id", "study_id", "split"]).to_csv(
        tmp_path / "CXLSeg-split.csv", index=False)
    table = read_benchmark("CXLSEG", tmp_path)
    for split, pairs in want.items():
        got = table[table["split"] == split]
        assert list(zip(got["img_path"], got["mask_path"])) == pairs


def write_qata(root, n_train=10, n_test=3, size=8):
    """QaTa-COV19-v2/{Train Set,Test Set}/{Images,Ground-truths}: mask_<name>; one training image without a mask.
    Label / mask: a bright square where the mask is 255. Returns the training names that have masks, sorted."""
    named = []
    for split, n in (("Train Set", n_train), ("Test Set", n_test)):
        for i in range(n):
            name = f"covid_{i + 1}.png" if i % 2 else f"sub-S{i:05d}_ses-E0_run-1.png"
            pixels = rng.integers(0, 60, (size, size))
            mask = np.zeros((size, size), np.uint8)
            mask[size // 4:size // 2, size // 4:3 * size // 4] = 255
            pixels[mask > 0] = 220
            (root / split / "Images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8)).save(root / split / "Images" / name)
            if not (split == "Train Set" and i == n - 1):
                (root / split / "Ground-truths").mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(root / split / "Ground-truths" / f"mask_{name}")
                named.append((split, name))
    return named


def test_qata_release_test_set_and_val_from_train(tmp_path):
    root = tmp_path / "QaTa-COV19" / "QaTa-COV19-v2"
    named = write_qata(root)
    table = read_benchmark("QATA", root)
    # qata_data.ipynb: sorted training pairs with a mask, train_test_split(test_size=0.1)
    train_names = sorted(n for s, n in named if s == "Train Set")
    df = pd.DataFrame({"img_path": [f"Train Set/Images/{n}" for n in train_names],
                       "mask_path": [f"Train Set/Ground-truths/mask_{n}" for n in train_names]})
    train, val = train_test_split(df, test_size=0.1, random_state=SEED, shuffle=True)
    test_names = sorted(n for s, n in named if s == "Test Set")
    test = pd.DataFrame({"img_path": [f"Test Set/Images/{n}" for n in test_names],
                         "mask_path": [f"Test Set/Ground-truths/mask_{n}" for n in test_names]})
    for split, df in (("train", train), ("val", val), ("test", test)):
        got = table[table["split"] == split]
        assert list(zip(got["img_path"], got["mask_path"])) == list(zip(df["img_path"], df["mask_path"])), split
    assert (len(train), len(val), len(test)) == (8, 1, 3)


# ---- evaluate.py ----

COMMON = ["--model", "tiny", "--img_size", "32", "--device", "cpu", "--workers", "0", "--probe_epochs", "1",
          "--bootstrap", "10", "--fractions", "1.0", "--batch_size", "8"]


def test_evaluate_runs_tb_by_name(tmp_path):
    root = tmp_path / "shenzhen"
    rows = []
    for i in range(20):
        label = i % 2
        study = f"CHNCXR_{i + 1:04d}_{label}.png"
        image(root / "images" / "images" / study, 40 + 160 * label, size=32)
        rows.append((study, "Female", "30yrs", "normal" if label == 0 else "PTB"))
    pd.DataFrame(rows, columns=["study_id", "sex", "age", "findings"]).to_csv(root / "shenzhen_metadata.csv",
                                                                                index=False)
    out = tmp_path / "run"
    evaluate.main(["--backbones", "random=", "--task", "tb", "--data_root", str(root), "--out_dir", str(out), *COMMON])
    res = json.loads((out / "results.json").read_text())
    written = pd.read_csv(out / "task_TB.csv")
    assert list(written["split"].value_counts()[["train", "val", "test"]]) == [13, 3, 4]  # 20 -> 4 test -> 3 val
    fraction = res["classification"]["fractions"]["1"]
    assert fraction["n_train"] == 13
    assert res["config"]["task"] == "tb" and res["config"]["label_columns"] == ["TB"]
    assert {k: res["classification"][k] for k in ("task", "task_type", "labels")} == {
        "task": "TB", "task_type": "binary", "labels": ["TB"]}
    assert "## Classification: TB (binary, probe)" in (out / "results.md").read_text()


def test_evaluate_runs_qata_segmentation_by_name(tmp_path):
    root = tmp_path / "QaTa-COV19-v2"
    write_qata(root, n_train=9, n_test=3, size=32)
    out = tmp_path / "seg"
    evaluate.main(["--backbones", "random=", "--task", "QATA", "--data_root", str(root), "--seg_epochs", "1",
                   "--seg_batch_size", "4", "--out_dir", str(out), *COMMON])
    res = json.loads((out / "results.json").read_text())
    assert res["segmentation"]["n_test"] == 3 and res["config"]["seg_name"] == "QATA"
    assert 0 <= res["segmentation"]["backbones"]["random"]["test"]["dice"]["value"] <= 1
    assert "classification" not in res


def test_help_lists_every_task_and_bad_combinations_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    assert all(name in text for name in BENCHMARKS) and len(BENCHMARKS) == 14
    for args, message in (
            (["--task", "TB", "--data_root", str(tmp_path), "--task_csv", "a.csv"], "leave out --task_csv"),
            (["--task", "TB", "--data_root", str(tmp_path), "--label_columns", "x"], "leave out --task_csv"),
            (["--task", "TB"], "--task NAME and --data_root DIR go together"),
            (["--task", "MNIST", "--data_root", str(tmp_path)], "--task: expected one of COVID, PNE, TB"),
            (["--task", "TB", "--data_root", str(tmp_path / "missing")], "missing: no such folder"),
            (["--task", "TB", "--data_root", str(tmp_path)],
             "shenzhen_metadata.csv: no such file (--task TB reads the layout of https://www.kaggle.com")):
        with pytest.raises(SystemExit) as e:
            evaluate.main([*args, "--out_dir", str(tmp_path / "out"), *COMMON])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
