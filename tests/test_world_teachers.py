"""Tests for the shared-physiology world and its teachers: the factor model against empirical correlations, the QRS
axis read back from leads I and aVF (Einthoven), the ECG teacher (findings by hand, training, the ECGFounder
checkpoint layout read back with widths from the tensor shapes, the Stage-2 target path), the oracle's retrieval
and CCA against hand computations, and the demo's two routes to an ECG embedding (Symile array, in-memory world).
All tiny, seeded, CPU."""
import json

import numpy as np
import pytest
import torch
from scipy.signal import butter, find_peaks, sosfiltfilt
from scipy.stats import spearmanr

from pacx.models.ecg import Net1D, Net1DConfig, config_from_state_dict
from pacx.weights import lab_dae_checkpoint, load_ecg_encoder
from pacx.world.ecg import FS
from pacx.world.ecg_teacher import CLINICAL, Config as TeacherConfig, findings, fit_thresholds, train_teacher
from pacx.world.files import write_world
from pacx.world.oracle import batch_retrieval, cca, oracle_report
from pacx.world.physiology import factor_correlations, make_world, sample_physiology

def test_factor_model_has_unit_variance_and_the_stated_correlations():
    p = sample_physiology(200_000, np.random.default_rng(0))
    z = {"age_z": (p.age - 64) / 15, "habitus": p.habitus, "cardiac": p.cardiac, "renal": p.renal,
         "inflammation": p.inflammation, "fluid": p.fluid}
    for name in ("habitus", "cardiac", "renal", "inflammation", "fluid"):
        assert z[name].std() == pytest.approx(1.0, abs=0.01), name
    for (a, b), r in factor_correlations().items():
        if a != "age_z":  # age is clipped to 18-95 years, so its z-score is not exactly the latent one
            assert np.corrcoef(z[a], z[b])[0, 1] == pytest.approx(r, abs=0.01), (a, b)
    assert factor_correlations()[("cardiac", "fluid")] == pytest.approx(0.40 + 0.30 * 0.405, abs=1e-3)


def test_qrs_axis_read_from_leads_i_and_avf_turns_left_with_habitus():
    world = make_world(120, seed=2, image_size=32)
    e = world.ecg.astype(np.float64)
    lead_i, avf = e[:, 0], e[:, 5]  # LEAD_NAMES: I, II, III, aVR, aVL, aVF
    band = sosfiltfilt(butter(2, [5, 30], btype="band", fs=FS, output="sos"), e[:, 1], axis=-1)
    axis = np.empty(len(e))
    half = int(0.04 * FS)  # +-40 ms around each R peak: the QRS, not P or T
    for k in range(len(e)):
        peaks, _ = find_peaks(band[k], distance=int(0.3 * FS), height=0.5 * band[k].max())
        peaks = peaks[(peaks > half) & (peaks < e.shape[-1] - half)]
        net_i = np.mean([lead_i[k, r - half:r + half].sum() for r in peaks])
        net_avf = np.mean([avf[k, r - half:r + half].sum() for r in peaks])
        axis[k] = np.degrees(np.arctan2(net_avf / np.sin(np.pi / 3), net_i))  # aVF = (sqrt(3)/2) y, lead I = x
    assert spearmanr(axis, world.physiology.habitus)[0] < -0.6
    assert spearmanr(axis, world.ecg_params["axis"])[0] > 0.8


def test_findings_by_hand():
    params = {"heart_rate": np.array([110.0, 55.0, 80.0]), "r_amp": np.array([1.8, 0.9, 1.3]),
              "qrs_width": np.array([0.12, 0.09, 0.09]), "t_amp": np.array([0.5, 0.2, 0.3]),
              "t_width": np.array([0.05, 0.05, 0.05]), "p_amp": np.array([0.2, 0.1, 0.1]),
              "p_width": np.array([0.03, 0.02, 0.02]), "pr": np.array([0.2, 0.15, 0.16]),
              "axis": np.array([-20.0, 0.0, 5.0])}
    thresholds = fit_thresholds(params)
    assert thresholds["heart_rate"] == pytest.approx(list(np.quantile([110, 55, 80], [0.2, 0.4, 0.6, 0.8])))
    assert thresholds["t_width"] == []  # no record exceeds a quantile of a constant: no constant labels
    names, y = findings(params, thresholds)
    assert names[:len(CLINICAL)] == list(CLINICAL) and y.shape == (3, len(CLINICAL) + 8 * 4)
    expected_first = [1, 0, 1, 0, 1, 1, 1, 1, 1, 1]  # tachy, brady, LVH, low V, wide QRS, peaked T, P pulm., ...
    assert y[0, :len(CLINICAL)].tolist() == expected_first
    assert y[1, :len(CLINICAL)].tolist() == [0, 1, 0, 1, 0, 0, 0, 0, 0, 0]
    graded = y[:, names.index("heart_rate>q20"):names.index("heart_rate>q80") + 1]
    assert graded.tolist() == [[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 0, 0]]  # 80 bpm is the median of three


def test_config_from_state_dict_reads_the_release_layout_and_narrow_nets():
    release = Net1D(Net1DConfig()).state_dict()  # the 12_lead_ECGFounder.pth layout (dense included)
    assert config_from_state_dict(release) == Net1DConfig()
    narrow = Net1DConfig(base_filters=8, filter_list=(16, 24), m_blocks_list=(1, 2), groups_width=8, n_classes=5,
                         kernel_size=7)
    assert config_from_state_dict(Net1D(narrow).state_dict()) == narrow


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    write_world(root / "world", 24, 16, 4, seed=5, image_size=32, formats=("images", "segmentation", "labs", "npy"))
    return root


@pytest.fixture(scope="module")
def teacher(tiny_world):
    cfg = TeacherConfig(world=str(tiny_world / "world"), out=str(tiny_world / "teacher" / "teacher.pth"),
                        base_filters=4, filter_list=(8, 12), m_blocks_list=(1, 1), groups_width=4, epochs=2,
                        batch_size=8, crop=1024, workers=1)
    report = train_teacher(cfg, log=lambda *_: None)
    return tiny_world / "teacher" / "teacher.pth", report


def test_teacher_checkpoint_is_ecgfounder_layout_and_loads_without_a_config(teacher):
    path, report = teacher
    saved = torch.load(path, weights_only=True)
    sd = saved["state_dict"]
    assert "first_conv.conv.weight" in sd and "dense.weight" in sd and "stage_list.1.block_list.0.bn1.weight" in sd
    assert sd["dense.weight"].shape == (len(saved["findings"]), 12)
    assert report["embedding_dim"] == 12 and json.loads(path.with_suffix(".json").read_text())["n_train"] == 24
    encoder = load_ecg_encoder(path)  # widths from the tensor shapes
    net = Net1D(Net1DConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved["config"].items()}))
    net.load_state_dict(sd)
    x = torch.randn(2, 12, 1500)
    torch.testing.assert_close(encoder(x), net.eval().forward_features(x))
    assert encoder(x).shape == (2, 12)


def test_teacher_targets_come_through_the_stage2_path(teacher, tiny_world):
    from pacx.data.targets import symile_targets
    from pacx.models.labs_dae import LabDAE
    torch.save(lab_dae_checkpoint(LabDAE()), tiny_world / "dae.pt")
    path, _ = teacher
    d = tiny_world / "world" / "data_npy" / "val"
    t = symile_targets(d, "val", str(path), str(tiny_world / "dae.pt"), tiny_world / "targets", torch.device("cpu"),
                       log=lambda *_: None)
    assert t["ecg"].shape == (16, 12) and t["labs"].shape == (16, 256)
    report = oracle_report(tiny_world / "world", str(tiny_world / "dae.pt"), str(path), tiny_world / "targets",
                           log=lambda *_: None)
    assert set(report["embeddings"]) == {"labs", "ecg"} and report["embeddings"]["ecg"]["dim"] == 12
    assert report["n_val"] == 16 and "fluid_overload" in report["labels"] and "cardiac" in report["factors"]


def test_batch_retrieval_by_hand():
    target = np.eye(4)
    pred = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0.1], [0, 0.2, 0, 1]])
    # row 0 -> 0 (hit), row 1 -> 2 (miss, true rank 2 of 4), row 2 -> 2 (hit), row 3 -> 3 (hit)
    top1, top5, n = batch_retrieval(pred, target, np.zeros(4), batch=4)
    assert (top1, top5, n) == (0.75, 1.0, 4)
    top1, _, n = batch_retrieval(np.vstack([pred, pred]), np.vstack([target, target]), np.zeros(4), batch=3)
    assert n == 6  # two full blocks of 3, the last 2 rows dropped


def test_cca_recovers_a_known_shared_dimension():
    rng = np.random.default_rng(0)
    s = rng.standard_normal(4000)  # the one shared signal
    x = np.column_stack([s + 0.5 * rng.standard_normal(4000), rng.standard_normal((4000, 5))])
    y = np.column_stack([rng.standard_normal((4000, 3)), s + 0.5 * rng.standard_normal(4000)])
    _, _, corr = cca(x[:3000], y[:3000], x[3000:], y[3000:], k=2, shrink=0.0)
    assert corr[0] == pytest.approx(0.8, abs=0.03)  # corr(s + e1, s + e2) = 1 / 1.25
    assert abs(corr[1]) < 0.1


def test_ecg_embeddings_agree_from_the_symile_array_and_the_world_in_memory(teacher, tiny_world):
    """The demo's alignment targets take train / val ECG embeddings from Stage 2's cache (the Symile array, min-max
    scaled per record) and test ones from the world regenerated in memory (mV): ECGFounder's preprocessing removes
    the affine scaling, so both routes give the same embedding."""
    from pacx.data.ecg_io import symile_ecg_to_ecgfounder
    from pacx.data.targets import encode_ecg
    path, _ = teacher
    meta = json.loads((tiny_world / "world" / "world.json").read_text())
    world = make_world(meta["n_train"] + meta["n_val"] + meta["n_test"], meta["seed"], meta["image_size"])
    d = tiny_world / "world" / "data_npy" / "val"
    hadm = np.load(d / "hadm_id_val.npy")
    rows = [int(np.flatnonzero(world.hadm_id == h)[0]) for h in hadm]
    encoder = load_ecg_encoder(path)
    from_symile = encode_ecg(symile_ecg_to_ecgfounder(np.load(d / "ecg_val.npy")), encoder, torch.device("cpu"))
    from_world = encode_ecg(world.ecg[rows], encoder, torch.device("cpu"))
    scale = np.abs(from_world).max()
    np.testing.assert_allclose(from_symile, from_world, atol=1e-4 * scale)


def test_oracle_backbone_features_are_what_evaluate_feeds(tiny_world):
    """--backbones: the CLS features the oracle measures are the backbone on each PNG as evaluate.py reads it
    (`eval_resize`: three channels, ImageNet-normalised), here for a random init at the world's size."""
    import pandas as pd
    from PIL import Image

    from pacx.data.transforms import eval_resize
    from pacx.weights import load_backbone
    from pacx.world.oracle import cls_features, read_pixels

    world = tiny_world / "world"
    paths = pd.read_csv(world / "images.csv")["path"].tolist()[:3]
    got = cls_features("", read_pixels(world, paths), 32)
    torch.manual_seed(0)
    backbone, _ = load_backbone("", "tiny", img_size=32)
    x = torch.stack([eval_resize(torch.from_numpy(np.array(Image.open(world / p)))[None], 32) for p in paths])
    with torch.no_grad():
        np.testing.assert_allclose(got, backbone.eval()(x).numpy(), atol=1e-5)
    report = oracle_report(world, None, None, tiny_world / "targets", log=lambda *_: None, backbones={"random": ""})
    entry = report["backbones"]["random"]
    assert set(entry["factors"]) == {"age_z", "habitus", "cardiac", "renal", "inflammation", "fluid"}
    assert set(entry["labels"]) == set(json.loads((world / "world.json").read_text())["label_names"])
