"""The low-label regime: a fixed-seed subset of the training split that still has a positive for every label.

Implements METHOD.md "Stage 3" (Low-data regime: subsample only the training split at 1%, 10%, 100% with a fixed
seed, guaranteeing at least one positive per label column; validation and test stay whole), following the reference
`LowDataCXRDataModule._get_stratified_subset` (Lyce24/PACX-MAE `Data/data_modules.py`): take int(N * fraction) rows,
first one positive for each label, then random rows for the rest.

Two differences from the reference, both about reproducibility: the draws come from one permutation of
`numpy.random.default_rng(seed)` (the reference seeds Python's global `random`), and a label gets a forced row only
when no forced row already covers it. So for one seed the subsets are nested (the 1% subset lies inside the 10%
one), and they depend only on the labels, the fraction and the seed.

Notation: N = training rows, C = label columns (binary 1, multilabel C; multiclass: classes).
"""
import numpy as np


def subsample_indices(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Sorted row indices of a `fraction` subset of the training split.

    `labels`: (N, C) or (N,) 0/1 values (binary / multilabel: every column with a positive in the split gets one in
    the subset) or (N,) integer class ids (multiclass: every class that occurs gets a row). The subset has
    max(int(N * fraction), rows forced by that guarantee, 1) rows; a fraction >= 1 returns every row.
    """
    if not 0 < fraction:
        raise ValueError(f"subsample_indices: fraction must be > 0, found {fraction}")
    labels = np.asarray(labels)
    n = len(labels)
    if fraction >= 1 or n == 0:
        return np.arange(n)
    if labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer):
        classes = np.unique(labels)
        positive = labels[:, None] == classes[None]  # (N, K) one-hot of the classes present
    else:
        positive = labels.reshape(n, -1) > 0.5  # (N, C)
    order = np.random.default_rng(seed).permutation(n)
    chosen = np.zeros(n, dtype=bool)
    for c in range(positive.shape[1]):
        if positive[chosen, c].any() or not positive[:, c].any():
            continue  # already covered, or no positive in the whole split (nothing to guarantee)
        first = order[np.argmax(positive[order, c])]  # the earliest positive row in the permutation
        chosen[first] = True
    target = max(int(n * fraction), int(chosen.sum()), 1)
    rest = order[~chosen[order]]  # the permutation without the forced rows
    chosen[rest[: target - int(chosen.sum())]] = True
    return np.flatnonzero(chosen)
