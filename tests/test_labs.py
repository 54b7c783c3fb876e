"""Tests for pacx/data/labs.py: the lab constants and the empirical-CDF percentiles (against scipy); the CSV reader is
tested in tests/test_lab_table.py."""
import json

import numpy as np
import pytest
from scipy.stats import percentileofscore

from pacx.data.labs import LAB_COLUMNS, LAB_ITEMIDS, LAB_NAMES, LabPercentiles, lab_index


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
    assert lp.unfitted() == [0]
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
