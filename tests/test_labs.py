"""Tests for pacx/data/labs.py: the lab constants, the empirical-CDF percentiles (against scipy) and the CSV reader."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import percentileofscore

from pacx.data.labs import LAB_COLUMNS, LAB_ITEMIDS, LAB_NAMES, LabPercentiles, lab_index, read_lab_table

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
MHH_LABS = SAMPLES / "labs" / "mhh_covid19_image_repository_data.csv"


def weak_percentile(train: np.ndarray, x: float) -> float:
    """The independent oracle: scipy's weak percentile rank over the non-NaN training values, in [0, 1]."""
    return percentileofscore(train[~np.isnan(train)], x, kind="weak") / 100


def messy_table(rng, n: int) -> np.ndarray:
    """(n, 50) values with ties (rounded), NaNs and a few infinities."""
    x = np.round(rng.normal(size=(n, len(LAB_ITEMIDS))) * 3, 0)
    x[rng.random(x.shape) < 0.3] = np.nan
    x[rng.random(x.shape) < 0.02] = np.inf
    x[rng.random(x.shape) < 0.02] = -np.inf
    return x


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    return path


def test_constants_follow_design():
    assert len(LAB_ITEMIDS) == len(LAB_NAMES) == 50
    assert list(LAB_ITEMIDS) == sorted(set(LAB_ITEMIDS))  # ascending, unique: Symile's column order
    assert len({n.lower() for n in LAB_NAMES}) == 50
    pairs = dict(zip(LAB_ITEMIDS, LAB_NAMES))
    assert pairs[50802] == "Base Excess" and pairs[50934] == "H" and pairs[51244] == "Lymphocytes"
    assert pairs[51678] == "L" and pairs[52172] == "RDW-SD"
    assert LAB_COLUMNS[0] == "50802" and lab_index("base EXCESS") == 0 and lab_index(52172) == 49
    assert lab_index("50803") is None and lab_index("glucose ") == LAB_ITEMIDS.index(50931)


def test_percentiles_match_scipy_weak_rank():
    rng = np.random.default_rng(0)
    train, test = messy_table(rng, 300), messy_table(rng, 80)
    test[0, :5] = [-1e9, 1e9, np.inf, -np.inf, 0.5]  # outside the training range, infinities, between ties
    pct, mask = LabPercentiles().fit(train).transform(test)
    assert pct.dtype == np.float32 and mask.dtype == np.float32
    np.testing.assert_array_equal(mask, ~np.isnan(test))
    for j in range(0, 50, 7):
        for i in np.flatnonzero(~np.isnan(test[:, j])):
            assert pct[i, j] == pytest.approx(weak_percentile(train[:, j], test[i, j]), abs=1e-6)
    # inf is at or above every training value; -inf and -1e9 count only the training -infs at or below them.
    assert pct[0, 2] == 1.0
    for j in (0, 3):
        col = train[:, j][~np.isnan(train[:, j])]
        assert pct[0, j] == pytest.approx(np.isneginf(col).mean(), abs=1e-6) and np.isneginf(col).any()


def test_missing_entries_get_mean_training_percentile():
    rng = np.random.default_rng(1)
    train, test = messy_table(rng, 200), messy_table(rng, 50)
    lp = LabPercentiles().fit(train)
    pct, mask = lp.transform(test)
    for j in (0, 17, 49):
        col = train[:, j][~np.isnan(train[:, j])]
        expected = np.mean([weak_percentile(train[:, j], v) for v in col])
        assert np.allclose(pct[mask[:, j] == 0, j], expected, atol=1e-6)
        assert (mask[:, j] == 0).any()


def test_lab_without_training_values():
    train = np.full((10, 50), np.nan)
    train[:, 1:] = np.arange(10)[:, None]
    lp = LabPercentiles().fit(train)
    pct, mask = lp.transform(np.full((3, 50), np.nan))
    assert np.all(pct[:, 0] == 0.5) and np.all(mask == 0)
    bad = np.full((1, 50), np.nan)
    bad[0, 0] = 1.0
    with pytest.raises(ValueError, match=r"50802 \(Base Excess\)"):
        lp.transform(bad)


def test_save_load_round_trip_is_exact_and_strict_json(tmp_path):
    rng = np.random.default_rng(2)
    train = messy_table(rng, 5000)
    train[:, 0] = rng.random(5000) / 3  # floats that do not survive a short decimal print
    test = messy_table(rng, 100)
    test[:, 0] = rng.random(100) / 3
    lp = LabPercentiles().fit(train)
    lp.save(tmp_path / "lp.json")
    # Strict JSON: no bare Infinity / NaN tokens.
    json.loads((tmp_path / "lp.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict token {c}"))
    loaded = LabPercentiles.load(tmp_path / "lp.json")
    for a, b in zip(lp.transform(test), loaded.transform(test)):
        np.testing.assert_array_equal(a, b)
    # Small: unique values only (lab 1 has ~20 distinct rounded values out of 5000).
    assert len(loaded.values[1]) < 40
    assert (tmp_path / "lp.json").stat().st_size < 200_000


def test_load_rejects_other_json(tmp_path):
    (tmp_path / "x.json").write_text('{"labs": []}')
    with pytest.raises(ValueError, match="format"):
        LabPercentiles.load(tmp_path / "x.json")


def test_read_lab_table_by_itemid_and_name(tmp_path):
    # Shuffled columns, names in any case, an id column, inf strings and several spellings of "missing".
    order = list(range(50))[::-1]
    header = ["hadm_id"] + [LAB_NAMES[j].upper() if j % 2 else LAB_COLUMNS[j] for j in order]
    row1 = ["7"] + [str(j + 0.5) for j in order]
    row2 = ["8"] + ["inf", "-inf", "", "NA", " nan ", "1e3"] + ["2"] * 44
    df = read_lab_table(write_csv(tmp_path / "t.csv", header, [row1, row2]), id_column="hadm_id")
    assert list(df.columns) == ["hadm_id", *LAB_COLUMNS]
    assert list(df["hadm_id"]) == ["7", "8"]
    np.testing.assert_array_equal(df[list(LAB_COLUMNS)].iloc[0].to_numpy(), np.arange(50) + 0.5)
    second = df[[LAB_COLUMNS[j] for j in order[:6]]].iloc[1].to_numpy()
    np.testing.assert_array_equal(second, [np.inf, -np.inf, np.nan, np.nan, np.nan, 1000.0])


def test_read_lab_table_errors_name_the_problem(tmp_path):
    header = list(LAB_COLUMNS)
    good = ["1"] * 50
    with pytest.raises(ValueError, match=r"'hadm_id' is neither a lab"):
        read_lab_table(write_csv(tmp_path / "a.csv", ["hadm_id", *header], [["1", *good]]))
    df = read_lab_table(tmp_path / "a.csv", allow_extra=True)
    assert list(df.columns) == list(LAB_COLUMNS)

    with pytest.raises(ValueError, match=r"52172 \(RDW-SD\)"):
        read_lab_table(write_csv(tmp_path / "b.csv", header[:-1], [good[:-1]]))
    df = read_lab_table(tmp_path / "b.csv", allow_missing=True)
    assert df["52172"].isna().all() and not df["50802"].isna().any()

    bad = [good, good[:3] + ["1.2.5"] + good[4:]]
    with pytest.raises(ValueError, match=r"line 3 \(data row 2\), column '50818'.*'1.2.5'"):
        read_lab_table(write_csv(tmp_path / "c.csv", header, bad))
    with pytest.raises(ValueError, match=r"e.csv: not a readable CSV table.*line 3"):
        read_lab_table(write_csv(tmp_path / "e.csv", header, [good, good + ["1"]]))

    with pytest.raises(ValueError, match=r"'50802' and 'base excess' both give lab 50802"):
        read_lab_table(write_csv(tmp_path / "d.csv", [*header, "base excess"], [good + ["1"]]))

    with pytest.raises(ValueError, match=r"id column 'sid' not found"):
        read_lab_table(tmp_path / "a.csv", id_column="sid")
    with pytest.raises(ValueError, match=r"maps 'hadm_id' to 'Troponin'"):
        read_lab_table(tmp_path / "a.csv", columns={"hadm_id": "Troponin"})


def test_real_mhh_lab_table_through_explicit_mapping():
    """The MHH COVID-19 table is real and messy: interval-binned values, -inf/inf, empty cells, redacted columns."""
    if not MHH_LABS.exists():
        pytest.skip(f"{MHH_LABS} not present")
    # Absolute counts (10^9/L) and blood gases in mmHg: the MIMIC labs with the same meaning and unit.
    mapping = {"lymphocytes_val": 51133, "neutrophils_val": "abs neutrophils", "pco2_val": "pCO2", "po2_val": 50821}
    with pytest.raises(ValueError, match="'patient_id' is neither a lab"):
        read_lab_table(MHH_LABS, id_column="image_id", columns=mapping, allow_missing=True)
    df = read_lab_table(MHH_LABS, id_column="image_id", columns=mapping, allow_extra=True, allow_missing=True)
    raw = pd.read_csv(MHH_LABS)  # pandas' own number parsing, as an independent reading
    assert len(df) == len(raw) == 243
    for src, lab in mapping.items():
        col = LAB_COLUMNS[lab_index(lab)]
        np.testing.assert_array_equal(df[col].to_numpy(), raw[src].to_numpy())
    assert np.isinf(df[[LAB_COLUMNS[lab_index(v)] for v in mapping.values()]].to_numpy()).any()

    # Fit on the first half of the patients, transform everything.
    patients = raw["patient_id"].unique()
    in_train = raw["patient_id"].isin(patients[: len(patients) // 2]).to_numpy()
    lp = LabPercentiles().fit(df[in_train])
    pct, mask = lp.transform(df)
    assert np.all((pct >= 0) & (pct <= 1))
    for src, lab in mapping.items():
        j = lab_index(lab)
        value, train = df[LAB_COLUMNS[j]].to_numpy(), df[LAB_COLUMNS[j]].to_numpy()[in_train]
        np.testing.assert_array_equal(mask[:, j], raw[src].notna().to_numpy())
        obs = ~np.isnan(value)
        order = np.argsort(value[obs], kind="stable")
        assert np.all(np.diff(pct[obs, j][order]) >= 0)  # monotone in the raw value
        for i in np.flatnonzero(obs):
            assert pct[i, j] == pytest.approx(weak_percentile(train, value[i]), abs=1e-6)
        if np.isposinf(value).any():
            assert np.all(pct[np.isposinf(value), j] == 1.0)
    po2 = df["50821"].to_numpy()
    assert np.isneginf(po2).any()  # -inf (below the detection limit): the lowest observed percentile
    assert pct[np.isneginf(po2), 5].max() <= pct[np.isfinite(po2), 5].min()
    assert np.all(pct[:, lab_index("Glucose")] == 0.5) and np.all(mask[:, lab_index("Glucose")] == 0)
