"""Bring your own data (issue 16), from the command line: a lab table with 8 of the 50 labs under the user's own
column names trains the lab DAE and feeds Stage 2, which transforms with the percentiles Stage 1b saved; 8-lead ECGs in
raw triplets; the random backbone of evaluate.py; low-label cells that cannot be scored."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import percentileofscore

from conftest import run_script
from pacx.checkpoint import load
from pacx.data.labs import LAB_ITEMIDS
from pacx.weights import load_lab_dae
from pacx.world.files import write_world

pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM")
# The user's names for the 8 labs they have; none is an itemid or a METHOD.md name.
BY_OPTION = {"crea": 50912, "hb": 51222}
BY_FILE = {"Na (mmol/l)": 50983, "kalium": 50971, "leuko": 51301, "thrombo": 51265, "lactate art.": 50813,
           "lymph %": 51244}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """12/6/6 patients as raw triplets (PNG, WFDB, labs.csv), and the user's lab table: 8 labs renamed, a ward
    column, one row per admission."""
    root = tmp_path_factory.mktemp("own")
    write_world(root, 12, 6, 6, seed=2, image_size=32, formats=("images", "labs", "wfdb"))
    labs = pd.read_csv(root / "labs.csv", dtype=str, keep_default_na=False)
    user = {"hadm_id": labs["hadm_id"], "ward": "icu"}
    user |= {name: labs[str(itemid)] for name, itemid in {**BY_OPTION, **BY_FILE}.items()}
    pd.DataFrame(user).to_csv(root / "my_labs.csv", index=False)
    (root / "map.csv").write_text("column,itemid\n" + "".join(f"{c},{i}\n" for c, i in BY_FILE.items()))
    return root


def expected_percentiles(reference: pd.DataFrame, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(x, m) (N, 50) by hand: scipy's weak percentile rank among the `reference` rows' values, the mean reference
    percentile where a value is missing, 0.5 for the labs the table lacks."""
    x, m = np.full((len(rows), 50), 0.5), np.zeros((len(rows), 50))
    for name, itemid in {**BY_OPTION, **BY_FILE}.items():
        j = LAB_ITEMIDS.index(itemid)
        ref = reference[name].dropna().to_numpy()
        weak = [percentileofscore(ref, v, kind="weak") / 100 for v in ref]
        values = rows[name].to_numpy()
        m[:, j] = ~np.isnan(values)
        x[:, j] = [percentileofscore(ref, v, kind="weak") / 100 if not np.isnan(v) else np.mean(weak)
                   for v in values]
    return x, m


def test_eight_user_named_labs_train_the_dae_and_feed_stage_2_with_its_transform(world, tmp_path):
    mapping = ["--lab_id_column", "hadm_id", "--lab_columns", ",".join(f"{c}={i}" for c, i in BY_OPTION.items()),
               "--lab_map", str(world / "map.csv")]
    dae = run_script("train_labs.py", ["--data", str(world / "my_labs.csv"), *mapping, "--epochs", "3",
                                       "--batch_size", "8", "--warmup_steps", "1", "--log_every", "1", "--workers",
                                       "0", "--out_dir", str(tmp_path / "dae")])
    assert dae.returncode == 0, dae.stderr[-2000:]
    notes = [line for line in dae.stdout.splitlines() if line.startswith(str(world / "my_labs.csv"))]
    assert len(notes) == 2 and "42 of the 50 labs have no column" in notes[0], notes
    assert notes[1].endswith("COLUMN=ITEMID): ward")  # the id column is not "unused"
    assert "patients/s" in dae.stdout and "img/s" not in dae.stdout
    assert (tmp_path / "dae" / "lab_percentiles.json").is_file()

    distill = run_script("train_distill.py", [
        "--data", str(world / "triplets.csv"), "--labs_table", str(world / "my_labs.csv"), *mapping,
        "--labs_dae", str(tmp_path / "dae" / "last.pt"), "--use_ecg", "false", "--model", "tiny", "--img_size", "32",
        "--batch_size", "4", "--epochs", "1", "--max_steps", "1", "--workers", "0", "--targets_cache",
        str(tmp_path / "cache"), "--out_dir", str(tmp_path / "distill")])
    assert distill.returncode == 0, distill.stderr[-2000:]
    reuse = f"labs: percentiles by the transform the lab DAE was trained with, {tmp_path / 'dae'}/lab_percentiles.json"
    assert sum(line.startswith(reuse) for line in distill.stdout.splitlines()) == 1, distill.stdout

    # The cached train targets against the DAE applied by hand to percentiles computed by hand.
    table = pd.read_csv(world / "my_labs.csv", dtype={"hadm_id": str}).set_index("hadm_id")
    triplets = pd.read_csv(world / "triplets.csv", dtype={"hadm_id": str})
    train_ids = triplets.loc[triplets["split"] == "train", "hadm_id"]
    dae_model = load_lab_dae(tmp_path / "dae" / "last.pt").eval()
    (cached,) = [load(f)["labs"] for f in (tmp_path / "cache").glob("targets_train_*.pt")]
    stage1b = expected_percentiles(table, table.loc[train_ids])  # every row of the table Stage 1b trained on
    refit = expected_percentiles(table.loc[train_ids], table.loc[train_ids])  # what Stage 2 used to do
    assert np.abs(stage1b[0] - refit[0]).max() > 0.05  # the two transforms differ on these rows
    with torch.no_grad():
        want, other = (dae_model.encode(torch.tensor(x, dtype=torch.float32), torch.tensor(m, dtype=torch.float32))
                       for x, m in (stage1b, refit))
    torch.testing.assert_close(cached, want, atol=1e-5, rtol=0)
    assert (cached - other).abs().max() > 1e-3


def test_stage_2_fits_on_the_training_rows_without_a_saved_transform(world, tmp_path):
    from pacx.data.targets import read_lab_inputs, table_lab_targets

    lines = []
    labs = read_lab_inputs(world / "labs.csv", "hadm_id", {}, None, lines.append)
    assert labs.transform is None and lines == [f"labs: no lab_percentiles.json beside the lab DAE (random weights): "
                                                f"percentiles are fitted on the training rows of {world}/labs.csv"]
    ids = pd.read_csv(world / "labs.csv", dtype=str)["hadm_id"].tolist()
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="RANDOM"):
        a = table_lab_targets(labs, ids[:3], ids[:12], None)
        b = table_lab_targets(labs, ids[:3], ids, None)
    assert not np.allclose(a, b)  # fitted on the rows named as training rows


def test_eight_lead_records_in_triplets_are_said_once_and_bad_ones_named_by_line(world, tmp_path):
    """Two triplets point at 8-lead exports: one line for the run; a record lacking V6 is named by its CSV line."""
    import shutil

    import wfdb

    from pacx.data.ecg_io import ECGFOUNDER_LEADS
    from pacx.data.targets import read_ecg_records

    for name in ("images", "ecg"):
        shutil.copytree(world / name, tmp_path / name)
    triplets = pd.read_csv(world / "triplets.csv", dtype=str)
    eight = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    for k in (1, 13):  # a training row and a validation row
        record = wfdb.rdrecord(str(tmp_path / triplets["ecg_path"][k]))
        cols = [record.sig_name.index(n) for n in eight]
        wfdb.wrsamp(f"eight{k}", fs=500, units=["mV"] * 8, sig_name=eight, p_signal=record.p_signal[:, cols],
                    fmt=["16"] * 8, adc_gain=[1000.0] * 8, baseline=[0] * 8, write_dir=str(tmp_path / "ecg"))
        triplets.loc[k, "ecg_path"] = f"ecg/eight{k}"
    triplets.to_csv(tmp_path / "triplets.csv", index=False)
    res = run_script("train_distill.py", [
        "--data", str(tmp_path / "triplets.csv"), "--labs_table", str(world / "labs.csv"), "--model", "tiny",
        "--img_size", "32", "--batch_size", "4", "--epochs", "1", "--max_steps", "1", "--workers", "0",
        "--targets_cache", str(tmp_path / "cache"), "--out_dir", str(tmp_path / "distill")])
    assert res.returncode == 0, res.stderr[-2000:]
    said = [line for line in res.stdout.splitlines() if "lack some of III, aVR, aVL, aVF" in line]
    assert said == ["ECG: 2 record(s) lack some of III, aVR, aVL, aVF; derived from I and II (III = II - I, aVR = "
                    "-(I + II)/2, aVL = I - II/2, aVF = II - I/2)"], res.stdout

    signals, derived = read_ecg_records([tmp_path / "ecg" / "eight1"], tmp_path / "triplets.csv", np.array([1]),
                                        "ecg_path")
    assert derived == 1 and signals.shape == (1, 12, 5000)
    i, ii = signals[0, ECGFOUNDER_LEADS.index("I")], signals[0, ECGFOUNDER_LEADS.index("II")]
    np.testing.assert_allclose(signals[0, ECGFOUNDER_LEADS.index("aVF")], ii - i / 2, atol=1e-6)
    wfdb.wrsamp("seven", fs=500, units=["mV"] * 7, sig_name=eight[:7], p_signal=np.zeros((5000, 7)), fmt=["16"] * 7,
                adc_gain=[1000.0] * 7, baseline=[0] * 7, write_dir=str(tmp_path / "ecg"))
    with pytest.raises(ValueError, match=r"triplets.csv: line 9, column 'ecg_path': .*seven: record lacks standard "
                                         r"leads \['V6'\]"):
        read_ecg_records([tmp_path / "ecg" / "eight1", tmp_path / "ecg" / "seven"], tmp_path / "triplets.csv",
                         np.array([1, 7]), "ecg_path")


def test_workers_are_capped_at_the_cores_with_one_line(monkeypatch):
    from pacx import loader

    monkeypatch.setattr(loader.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    lines = []
    assert loader.cap_workers(4, lines.append) == 2
    assert lines == ["--workers 4: this process may use 2 CPU core(s), so 2 data-loading worker(s) are used"]
    assert loader.cap_workers(2, lines.append) == 2 and loader.cap_workers(0, lines.append) == 0 and len(lines) == 1
