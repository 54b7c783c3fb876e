"""Tests for the synthetic physiology world (pacx/synthetic*.py): determinism, real file formats read back with
their own readers (Pillow, pandas, wfdb), Symile-MIMIC tensors checked against independent computations
(scipy's percentileofscore, the inverse ImageNet normalisation), and the physiology where it should be."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.signal import butter, find_peaks, sosfiltfilt
from scipy.stats import percentileofscore, spearmanr
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import r2_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pacx.data.lab_table import read_lab_table
from pacx.data.labs import LAB_ITEMIDS, LabPercentiles
from pacx.world.files import IMAGENET_MEAN, IMAGENET_STD, retrieval_rows, write_world
from pacx.world.physiology import LABEL_NAMES, make_world
from pacx.world.cxr import render_cxr, sample_nuisance
from pacx.world.ecg import FS, LEAD_NAMES

ALL_FORMATS = ("images", "segmentation", "labs", "npy", "retrieval", "wfdb")


@pytest.fixture(scope="module")
def world():
    return make_world(400, seed=0, image_size=64)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    write_world(out, n_train=14, n_val=10, n_test=11, seed=3, image_size=48, formats=ALL_FORMATS)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = (write_world(tmp_path / name, 5, 3, 3, seed=s, image_size=32, formats=ALL_FORMATS)
               for name, s in (("a", 7), ("b", 7), ("c", 8)))
    assert _files(a) == _files(b)
    assert (a / "images.csv").read_bytes() != (c / "images.csv").read_bytes()
    cxr_a, cxr_c = (np.load(d / "data_npy" / "train" / "cxr_train.npy") for d in (a, c))
    assert not np.array_equal(cxr_a, cxr_c)
    w1, w2 = make_world(4, seed=11, image_size=32), make_world(4, seed=11, image_size=32)
    for name in ("cxr", "lung_mask", "heart_mask", "ecg", "hadm_id"):
        assert np.array_equal(getattr(w1, name), getattr(w2, name))
    assert np.array_equal(w1.labs, w2.labs, equal_nan=True)


def test_pngs_csvs_and_masks_parse_back(written):
    images = pd.read_csv(written / "images.csv")
    assert list(images.columns) == ["path", "hadm_id", "split", *LABEL_NAMES]
    assert images["split"].value_counts().to_dict() == {"train": 14, "test": 11, "val": 10}
    assert images["hadm_id"].is_unique
    seg = pd.read_csv(written / "segmentation.csv")
    assert {"img_path", "mask_path", "heart_mask_path", "split"} <= set(seg.columns)
    for _, row in seg.head(5).iterrows():
        img = Image.open(written / row["img_path"])
        assert img.mode == "L" and img.size == (48, 48)
        lung = np.array(Image.open(written / row["mask_path"]))
        heart = np.array(Image.open(written / row["heart_mask_path"]))
        assert lung.shape == (48, 48) and set(np.unique(lung)) <= {0, 255} and set(np.unique(heart)) <= {0, 255}
        assert lung.any() and heart.any() and not np.any((lung > 0) & (heart > 0))  # lung fields exclude the heart
    labs = pd.read_csv(written / "labs.csv")
    assert list(labs.columns) == ["hadm_id"] + [str(i) for i in LAB_ITEMIDS]
    assert labs.isna().to_numpy().any() and labs.notna().to_numpy()[:, 1:].any(axis=1).all()
    meta = json.loads((written / "world.json").read_text())
    assert meta["seed"] == 3 and meta["samples"]["hadm_id"] == images["hadm_id"].tolist()
    same = make_world(35, seed=3, image_size=48)  # world.json records the latent state of exactly this world
    np.testing.assert_allclose(meta["samples"]["ctr"], same.physiology.ctr, atol=1e-6)
    assert meta["samples"]["fluid_overload"] == same.labels["fluid_overload"].tolist()


def test_wfdb_records_read_back_with_einthoven(written):
    import wfdb
    triplets = pd.read_csv(written / "triplets.csv")
    assert list(triplets.columns) == ["hadm_id", "split", "cxr_path", "ecg_path"]
    rec = wfdb.rdrecord(str(written / triplets["ecg_path"][0]))
    assert rec.fs == FS and rec.sig_name == list(LEAD_NAMES) and rec.units == ["mV"] * 12
    s = rec.p_signal  # (5000, 12), quantised to 1 uV
    assert s.shape == (5000, 12) and (written / triplets["cxr_path"][0]).exists()
    lead = {name: s[:, i] for i, name in enumerate(LEAD_NAMES)}
    tol = 2e-3  # two quantisation steps
    np.testing.assert_allclose(lead["III"], lead["II"] - lead["I"], atol=tol)
    np.testing.assert_allclose(lead["aVR"], -(lead["I"] + lead["II"]) / 2, atol=tol)
    np.testing.assert_allclose(lead["aVL"], lead["I"] - lead["II"] / 2, atol=tol)
    np.testing.assert_allclose(lead["aVF"], lead["II"] - lead["I"] / 2, atol=tol)
    assert 0.5 < np.ptp(lead["II"]) < 6.0  # millivolts, not adu or volts


def test_symile_tensors_shapes_ranges_and_inverses(written):
    root = written / "data_npy"
    images = pd.read_csv(written / "images.csv").set_index("hadm_id")
    labs = pd.read_csv(written / "labs.csv").set_index("hadm_id")
    train_ids = np.load(root / "train" / "hadm_id_train.npy")
    n = {"train": 14, "val": 10, "val_retrieval": 100, "test": 110}
    for split, rows in n.items():
        d = root / split
        cxr, ecg = np.load(d / f"cxr_{split}.npy"), np.load(d / f"ecg_{split}.npy")
        pct, miss = np.load(d / f"labs_percentiles_{split}.npy"), np.load(d / f"labs_missingness_{split}.npy")
        hadm = np.load(d / f"hadm_id_{split}.npy")
        assert cxr.shape == (rows, 3, 48, 48) and cxr.dtype == np.float32
        assert ecg.shape == (rows, 1, 5000, 12) and ecg.dtype == np.float32
        assert pct.shape == miss.shape == (rows, 50) and hadm.shape == (rows,)
        np.testing.assert_allclose(ecg.min(axis=(1, 2, 3)), -1.0, atol=1e-6)
        np.testing.assert_allclose(ecg.max(axis=(1, 2, 3)), 1.0, atol=1e-6)
        assert pct.min() >= 0.0 and pct.max() <= 1.0 and set(np.unique(miss)) <= {0, 1}
        # Inverse ImageNet normalisation gives back the PNG of the same hadm_id, in every channel.
        png = np.array(Image.open(written / images.loc[hadm[0], "path"])) / 255.0
        for c in range(3):
            np.testing.assert_allclose(cxr[0, c] * IMAGENET_STD[c] + IMAGENET_MEAN[c], png, atol=1e-5)
        # Missingness is exactly the filled cells of labs.csv (1 = observed), for labs the train split measured.
        measured = labs.loc[train_ids].notna().any(axis=0).to_numpy()
        np.testing.assert_array_equal(miss, (labs.loc[hadm].notna().to_numpy() & measured).astype(int))


def test_npy_percentiles_match_scipy_on_labs_csv(written):
    labs = read_lab_table(written / "labs.csv", id_column="hadm_id")  # pacx's own reader accepts the file
    labs = labs.set_index(labs["hadm_id"].astype(np.int64))
    train_ids = np.load(written / "data_npy" / "train" / "hadm_id_train.npy")
    ids = np.load(written / "data_npy" / "val" / "hadm_id_val.npy")
    pct = np.load(written / "data_npy" / "val" / "labs_percentiles_val.npy")
    for j, itemid in enumerate(LAB_ITEMIDS):
        train = labs.loc[train_ids, str(itemid)].dropna().to_numpy()
        if len(train) == 0:  # a lab no training row measured: imputed 0.5 everywhere (tiny worlds only)
            assert np.all(pct[:, j] == 0.5)
            continue
        mean_train = np.mean([percentileofscore(train, v, kind="weak") / 100 for v in train])
        for i, v in enumerate(labs.loc[ids, str(itemid)]):
            expected = mean_train if np.isnan(v) else percentileofscore(train, v, kind="weak") / 100
            assert pct[i, j] == pytest.approx(expected, abs=1e-6)


def test_retrieval_rows_follow_symile_layout(written):
    rows, query, label = retrieval_rows(12, np.random.default_rng(0))
    assert len(rows) == 120 and label[:12].all() and not label[12:].any()
    assert np.array_equal(rows[:12], np.arange(12)) and np.array_equal(query[:12], np.arange(12))
    for q in range(12):
        negatives = rows[12:][query[12:] == q]
        assert len(negatives) == 9 and len(set(negatives)) == 9 and q not in negatives
    d = written / "data_npy" / "test"
    hadm, label_hadm, label = (np.load(d / f"{f}_test.npy") for f in ("hadm_id", "label_hadm_id", "label"))
    assert np.array_equal(hadm[label == 1], label_hadm[label == 1])
    assert np.all(hadm[label == 0] != label_hadm[label == 0])
    test_ids = set(np.load(d / "hadm_id_test.npy")[label == 1])
    assert len(test_ids) == 11 and set(hadm) == test_ids  # negatives come from the test split only


def test_ecg_einthoven_rate_voltage_and_potassium(world):
    e, p = world.ecg.astype(np.float64), world.physiology
    i, ii = e[:, 0], e[:, 1]
    np.testing.assert_allclose(e[:, 2], ii - i, atol=1e-5)
    np.testing.assert_allclose(e[:, 3], -(i + ii) / 2, atol=1e-5)
    # Heart rate from the autocorrelation of the band-passed lead II (an independent rate detector).
    band = sosfiltfilt(butter(2, [5, 30], btype="band", fs=FS, output="sos"), ii, axis=-1)  # QRS energy
    qrs = np.abs(band) - np.abs(band).mean(axis=-1, keepdims=True)
    spec = np.fft.rfft(qrs, n=2 * qrs.shape[-1], axis=-1)
    acf = np.fft.irfft(np.abs(spec) ** 2, axis=-1)[:, :qrs.shape[-1]]
    lo, hi = int(FS * 60 / 160), int(FS * 60 / 40)
    rate = 60.0 * FS / (lo + np.argmax(acf[:, lo:hi], axis=-1))
    assert np.mean(np.abs(rate - p.heart_rate) / p.heart_rate < 0.05) > 0.95
    voltage = np.log(np.ptp(e[:, 10], axis=-1))  # V5 amplitude: left-ventricular mass
    assert np.corrcoef(voltage, p.cardiac)[0, 1] > 0.6
    # T/R ratio per beat: R peaks found on the band-passed lead II, T = the maximum 0.1-0.4 s later (tall, peaked
    # T waves are the ECG sign of hyperkalaemia).
    lead_ii = sosfiltfilt(butter(2, 0.5, btype="high", fs=FS, output="sos"), ii, axis=-1)  # no baseline wander
    t_over_r = np.empty(len(ii))
    for k in range(len(ii)):
        peaks, _ = find_peaks(band[k], distance=int(0.3 * FS), height=0.5 * band[k].max())
        peaks = peaks[(peaks > 50) & (peaks < ii.shape[-1] - 200)]
        t_over_r[k] = np.median([lead_ii[k, r + 50:r + 200].max() / lead_ii[k, r] for r in peaks])
    assert spearmanr(t_over_r, p.potassium)[0] > 0.35
    hyper = world.labels["hyperkalemia"] == 1
    assert np.median(t_over_r[hyper]) > 1.4 * np.median(t_over_r[~hyper])


def test_heart_width_in_image_follows_cardiac_size(world):
    p = world.physiology
    # Cardiothoracic ratio measured on the masks as a radiologist would: heart width / thoracic (lung) width.
    heart_w = np.array([np.ptp(np.flatnonzero(m.any(axis=0))) + 1 for m in world.heart_mask])
    chest_w = np.array([np.ptp(np.flatnonzero((l | h).any(axis=0))) + 1
                        for l, h in zip(world.lung_mask, world.heart_mask)])
    assert np.corrcoef(heart_w / chest_w, p.ctr)[0, 1] > 0.9
    assert np.median(np.abs(heart_w / chest_w - p.ctr)) < 0.02
    # The pixels alone carry it too: ridge regression from raw pixels to ctr on held-out images.
    x = world.cxr.reshape(len(p.ctr), -1) / 255.0
    ridge = RidgeCV(alphas=np.logspace(0, 4, 5)).fit(x[:300], p.ctr[:300])
    assert r2_score(p.ctr[300:], ridge.predict(x[300:])) > 0.6


def test_fluid_drawn_weakly_in_image():
    n, size = 6, 64
    nuisance = sample_nuisance(n, np.random.default_rng(0))
    ctr = np.full(n, 0.46)
    dry, _, _ = render_cxr(ctr, np.zeros(n), np.zeros(n), nuisance, size, seed=1)
    wet, lung, _ = render_cxr(ctr, np.full(n, 1.5), np.full(n, 2.0), nuisance, size, seed=1)
    other, _, _ = render_cxr(ctr, np.zeros(n), np.zeros(n), sample_nuisance(n, np.random.default_rng(1)), size, 1)
    fluid_effect = np.abs(wet.astype(float) - dry).mean()
    nuisance_effect = np.abs(other.astype(float) - dry).mean()
    assert 0 < fluid_effect < 0.25 * nuisance_effect
    diff = wet.astype(float) - dry
    assert diff[lung == 1].mean() > 3 * abs(diff[lung == 0].mean())  # the change sits in the lung fields


def test_fluid_overload_easier_from_labs_than_pixels(world):
    # Fluid overload is strong in the labs and weak in the image (there, mostly through the heart size it correlates
    # with). pacx.world.oracle measures the same on the validation split with the trained teachers' embeddings.
    y, n_train = world.labels["fluid_overload"], 250
    pct, observed = LabPercentiles().fit(world.labs[:n_train]).transform(world.labs)
    features = {"labs": np.concatenate([pct, observed], axis=1), "pixels": world.cxr.reshape(len(y), -1) / 255.0}
    auroc = {}
    for name, x in features.items():
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=3000))
        model.fit(x[:n_train], y[:n_train])
        auroc[name] = roc_auc_score(y[n_train:], model.predict_proba(x[n_train:])[:, 1])
    assert auroc["labs"] > 0.78 and auroc["labs"] > auroc["pixels"] + 0.08, auroc
    assert auroc["pixels"] > 0.6, auroc  # weak, but present


def test_labs_follow_physiology_and_missingness(world):
    p, labs = world.physiology, world.labs
    col = {itemid: labs[:, j] for j, itemid in enumerate(LAB_ITEMIDS)}
    seen = ~np.isnan(col[50912])
    assert np.corrcoef(np.log(col[50912][seen]), np.log(p.creatinine[seen]))[0, 1] > 0.95
    seen = ~np.isnan(col[50983])
    assert np.corrcoef(col[50983][seen], p.fluid[seen])[0, 1] < -0.4  # dilutional hyponatraemia
    observed = ~np.isnan(labs)
    assert observed[:, LAB_ITEMIDS.index(50820)].mean() < 0.4  # blood gases mostly missing
    assert observed[:, LAB_ITEMIDS.index(50983)].mean() > 0.85  # basic panel mostly present
    assert observed.any(axis=1).all()
    acuity = p.fluid + p.inflammation
    assert np.corrcoef(observed.sum(axis=1), acuity)[0, 1] > 0.1  # sicker patients get more tests
    assert set(world.labels) == set(LABEL_NAMES)


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown formats"):
        write_world(tmp_path, 2, 1, 1, formats=("images", "dicom"))
    with pytest.raises(ValueError, match="at least 16"):
        make_world(2, image_size=8)
