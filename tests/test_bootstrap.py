"""Bootstrap intervals (pacx/eval/bootstrap.py): they hold the point estimate, narrow as n grows, skip resamples that
lose
a class (counted independently), and a paired difference of a backbone with itself is exactly zero."""
import numpy as np
import pytest

from pacx.eval.bootstrap import bootstrap, bootstrap_ci, bootstrap_mean, paired_bootstrap, paired_mean_difference
from pacx.eval.metrics import classification_metrics, macro_auroc


def scores(n, seed=0, signal=1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(float)
    return y[:, None], (signal * y + rng.normal(size=n))[:, None]


def auroc(y, p):
    return macro_auroc(y, p, "binary")


def test_interval_holds_point_and_narrows():
    intervals = []
    for n in (100, 1600):
        y, p = scores(n)
        ci = bootstrap_ci(auroc, y, p, n_resamples=300, seed=1)
        assert ci.value == pytest.approx(auroc(y, p)) and ci.n_resamples == 300
        assert ci.lo < ci.value < ci.hi and ci.lo <= ci.median <= ci.hi
        intervals.append(ci)
    small, large = intervals
    assert (large.hi - large.lo) < 0.5 * (small.hi - small.lo)  # ~1/sqrt(16) = 0.25 expected


def test_paired_difference_with_itself_is_zero():
    y, p = scores(200)
    d = paired_bootstrap(lambda a, b: classification_metrics(a, b, "binary"), y, p, p, n_resamples=50)
    for ci in d.values():
        assert (ci.value, ci.median, ci.lo, ci.hi) == (0.0, 0.0, 0.0, 0.0)
    assert paired_mean_difference(p[:, 0], p[:, 0], n_resamples=20).hi == 0.0


def test_paired_difference_sees_a_better_model():
    y, good = scores(400, seed=2, signal=2.0)
    noise = np.random.default_rng(3).normal(size=good.shape)
    bad = 0.3 * good + noise  # the same scores, drowned in noise
    d = paired_bootstrap(auroc, y, good, bad, n_resamples=200)
    assert d.value == pytest.approx(auroc(y, good) - auroc(y, bad))
    assert d.lo > 0


def test_resamples_lacking_a_class_are_skipped():
    y = np.zeros((12, 1))
    y[3] = 1.0  # one positive in 12: about 1/3 of resamples lose it
    p = np.linspace(0, 1, 12)[:, None]
    ci = bootstrap_ci(auroc, y, p, n_resamples=200, seed=5)
    rng = np.random.default_rng(5)  # the same draws, counted by hand
    kept = sum(1 for _ in range(200) if y[rng.integers(0, 12, size=12)].sum() > 0)
    assert ci.n_resamples == kept and 0 < kept < 200
    unchecked = bootstrap_ci(auroc, y, p, n_resamples=200, seed=5, check_classes=False)
    assert unchecked.n_resamples == kept  # the NaN AUROCs of the lost resamples are dropped too


def test_multiclass_class_check_and_dict_metrics():
    rng = np.random.default_rng(4)
    y = np.r_[np.zeros(20, int), np.ones(20, int), [2]]  # class 2 occurs once
    p = rng.dirichlet(np.ones(3), size=len(y))
    out = bootstrap(lambda i: {"n2": float((y[i] == 2).sum())}, len(y), n_resamples=100, seed=0, labels=y)
    assert out["n2"].lo >= 1  # every kept resample still holds class 2
    ci = bootstrap_ci(lambda a, b: classification_metrics(a, b, "multiclass"), y, p, n_resamples=30)
    assert set(ci) == {"auroc", "accuracy", "precision", "recall", "f1"}


def test_bootstrap_mean():
    v = np.random.default_rng(6).normal(size=500)
    ci = bootstrap_mean(v, n_resamples=300)
    assert ci.value == pytest.approx(v.mean()) and ci.contains(v.mean())
    se = v.std() / np.sqrt(len(v))
    assert ci.hi - ci.lo == pytest.approx(2 * 1.96 * se, rel=0.25)  # the normal-theory width
