"""Bootstrap confidence intervals for the Stage-3 metrics, and paired differences between two backbones.

Implements METHOD.md "Stage 3" (95% bootstrap confidence intervals, the CXformer model card protocol: 500 resamples
of the test set with replacement, reported as the median with the 2.5 / 97.5 percentiles). The point estimate on the
full test set is reported next to them (`value`).

Resamples that lack a class. AUROC is undefined for a label column holding one class only, and a macro mean over
a varying set of columns is not comparable between resamples. So when `labels` are given, a resample in which a
column (binary / multilabel: an (N, C) 0/1 matrix or an (N,) 0/1 vector) or a class (multiclass: (N,) integer ids)
that has both classes / occurs in the full set has lost one of them is skipped, not redrawn; `n_resamples` in the
result counts the resamples kept. (Skipping is what the common `if len(np.unique(y[idx])) < 2: continue` bootstrap
does; with a test set of hundreds of images it almost never happens.)

Paired bootstrap: the difference metric(A) - metric(B) is computed on the *same* resample indices for both
backbones, so the interval reflects the variation of the difference, not of each score alone.
All resample indices come from `numpy.random.default_rng(seed)`, so every backbone sees the same resamples.
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class Interval:
    value: float  # the metric on the full set
    median: float  # median over the kept resamples
    lo: float  # 2.5th percentile (for level 0.95)
    hi: float  # 97.5th percentile
    n_resamples: int  # resamples kept (see the module docstring)

    def contains(self, x: float) -> bool:
        return self.lo <= x <= self.hi


def _class_signature(labels: np.ndarray) -> np.ndarray:
    """Which (column, class) pairs occur: a (C, 2) bool table for 0/1 labels, (K,) for integer class ids."""
    labels = np.asarray(labels)
    if labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer):
        return np.bincount(labels, minlength=int(labels.max()) + 1 if len(labels) else 0) > 0
    y2 = labels.reshape(len(labels), -1)
    pos = (y2 > 0.5).any(axis=0)
    neg = (y2 <= 0.5).any(axis=0)
    return np.stack([pos, neg], axis=1)


def _lost_a_class(full: np.ndarray, labels: np.ndarray) -> bool:
    sample = _class_signature(labels)
    if sample.shape != full.shape:  # integer ids: a missing highest class shortens the bincount
        sample = np.pad(sample, (0, len(full) - len(sample)))
    return bool((full & ~sample).any())


def bootstrap(fn: Callable[[np.ndarray], float | dict], n: int, n_resamples: int = 500, seed: int = 0,
              labels: np.ndarray | None = None, level: float = 0.95) -> Interval | dict[str, Interval]:
    """Intervals of `fn(idx)`, a float or a dict of floats computed on the rows `idx` of the test set.

    `fn(np.arange(n))` is the point estimate; each resample draws n row indices with replacement. `labels` (N, ...)
    turns on the class check of the module docstring. A dict-valued `fn` gives a dict of intervals (one resampling
    pass computes every metric).
    """
    if n < 1:
        raise ValueError("bootstrap: the test set is empty")
    point = fn(np.arange(n))
    scalar = not isinstance(point, dict)
    point = {"metric": point} if scalar else point
    full = _class_signature(labels) if labels is not None else None
    rng = np.random.default_rng(seed)
    draws = {k: [] for k in point}
    for _ in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        if full is not None and _lost_a_class(full, np.asarray(labels)[idx]):
            continue
        values = fn(idx)
        values = {"metric": values} if scalar else values
        for k in point:
            draws[k].append(values[k])
    tail = (1 - level) / 2 * 100
    out = {}
    for k, v in point.items():
        d = np.asarray(draws[k], dtype=np.float64)
        d = d[np.isfinite(d)]
        if len(d):
            lo, med, hi = np.percentile(d, [tail, 50, 100 - tail])
        else:
            lo = med = hi = float("nan")
        out[k] = Interval(float(v), float(med), float(lo), float(hi), len(d))
    return out["metric"] if scalar else out


def _difference(a, b):
    if isinstance(a, dict):
        return {k: a[k] - b[k] for k in a}
    return a - b


def bootstrap_ci(metric: Callable, y: np.ndarray, p: np.ndarray, n_resamples: int = 500, seed: int = 0,
                 check_classes: bool = True, level: float = 0.95):
    """Interval(s) of `metric(y, p)` (a float or a dict of floats) over resamples of the rows of y and p."""
    y, p = np.asarray(y), np.asarray(p)
    return bootstrap(lambda i: metric(y[i], p[i]), len(y), n_resamples, seed, y if check_classes else None, level)


def paired_bootstrap(metric: Callable, y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, n_resamples: int = 500,
                     seed: int = 0, check_classes: bool = True, level: float = 0.95,
                     metric_b: Callable | None = None):
    """Interval(s) of metric(y, p_a) - metric_b(y, p_b) (metric_b defaults to metric; it differs when, say, each
    backbone has its own tuned thresholds), both evaluated on the same resampled rows."""
    y, p_a, p_b = np.asarray(y), np.asarray(p_a), np.asarray(p_b)
    metric_b = metric if metric_b is None else metric_b
    return bootstrap(lambda i: _difference(metric(y[i], p_a[i]), metric_b(y[i], p_b[i])), len(y), n_resamples,
                     seed, y if check_classes else None, level)


def bootstrap_mean(values: np.ndarray, n_resamples: int = 500, seed: int = 0, level: float = 0.95) -> Interval:
    """Interval of the mean of per-sample scores (Dice per image, cosine per row, a retrieval hit per query)."""
    values = np.asarray(values, dtype=np.float64)
    return bootstrap(lambda i: float(values[i].mean()), len(values), n_resamples, seed, None, level)


def paired_mean_difference(a: np.ndarray, b: np.ndarray, n_resamples: int = 500, seed: int = 0,
                           level: float = 0.95) -> Interval:
    """Interval of mean(a) - mean(b) for per-sample scores of two backbones on the same samples."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_mean_difference: score arrays differ in shape: {a.shape} vs {b.shape}")
    return bootstrap(lambda i: float(a[i].mean() - b[i].mean()), len(a), n_resamples, seed, None, level)
