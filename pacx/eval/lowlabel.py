"""The low-label regime: a fixed-seed subset of the training split that still has a positive and a negative for every
label.

Implements METHOD.md "Stage 3" (Low-data regime: subsample only the training split at 1%, 10%, 100% with a fixed
seed, guaranteeing at least one positive per label column; validation and test stay whole), following the reference
`LowDataCXRDataModule._get_stratified_subset` (Lyce24/PACX-MAE `Data/data_modules.py`): take int(N * fraction) rows,
first one positive for each label, then random rows for the rest.

Three differences from the reference. Two are about reproducibility: the draws come from one permutation of
`numpy.random.default_rng(seed)` (the reference seeds Python's global `random`), and a label gets a forced row only
when no forced row already covers it. So for one seed the subsets are nested (the 1% subset lies inside the 10%
one), and they depend only on the labels, the fraction and the seed. The third: a negative is forced too. 1% of a
small training split is one row, a positive, on which a probe learns nothing while its test AUROC still prints as
a number; with a positive and a negative of every label the smallest subset is the smallest one that can be scored.
Where the whole training split lacks a class of a label, no subset can hold it: `not_computable` says so, and the
evaluation reports the cell as not computable instead of scoring it.

Notation: N = training rows, C = label columns (binary 1, multilabel C; multiclass: classes).
"""
import numpy as np


def _classes(labels: np.ndarray) -> tuple[np.ndarray, bool]:
    """(N, C) boolean positives of each label column (multiclass: of each class present), and whether multiclass."""
    labels = np.asarray(labels)
    if labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer):
        return labels[:, None] == np.unique(labels)[None], True  # (N, K) one-hot of the classes present
    return labels.reshape(len(labels), -1) > 0.5, False  # (N, C)


def subsample_indices(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Sorted row indices of a `fraction` subset of the training split.

    `labels`: (N, C) or (N,) 0/1 values (binary / multilabel: every column with a positive in the split gets one in
    the subset, every column with a negative a negative) or (N,) integer class ids (multiclass: every class that occurs
    gets a row). The subset has max(int(N * fraction), rows forced by that guarantee, 1) rows; a fraction >= 1 returns
    every row.
    """
    if not 0 < fraction:
        raise ValueError(f"subsample_indices: fraction must be > 0, found {fraction}")
    n = len(labels)
    if fraction >= 1 or n == 0:
        return np.arange(n)
    positive, multiclass = _classes(labels)
    # Multiclass: a row of one class is a negative of every other, so one row per class covers both.
    wanted = positive if multiclass else np.concatenate([positive, ~positive], axis=1)  # (N, C) or (N, 2C)
    order = np.random.default_rng(seed).permutation(n)
    chosen = np.zeros(n, dtype=bool)
    for c in range(wanted.shape[1]):
        if wanted[chosen, c].any() or not wanted[:, c].any():
            continue  # already covered, or absent from the whole split (nothing to guarantee)
        first = order[np.argmax(wanted[order, c])]  # the earliest such row in the permutation
        chosen[first] = True
    target = max(int(n * fraction), int(chosen.sum()), 1)
    rest = order[~chosen[order]]  # the permutation without the forced rows
    chosen[rest[: target - int(chosen.sum())]] = True
    return np.flatnonzero(chosen)


def not_computable(labels: np.ndarray, names: list[str]) -> str:
    """Why a probe trained on these training `labels` cannot be scored ('' when it can): a label column without a
    positive or a negative (multiclass: a single class) leaves nothing to tell apart."""
    positive, multiclass = _classes(labels)
    if multiclass:
        return "" if positive.shape[1] > 1 else f"the {len(positive)} training rows hold one class only"
    lacking = [f"no {kind} of {name!r}" for c, name in enumerate(names)
               for kind, present in (("positive", positive[:, c].any()), ("negative", (~positive[:, c]).any()))
               if not present]
    return f"the {len(positive)} training rows hold {' and '.join(lacking)}" if lacking else ""


def low_label_subsets(y: np.ndarray, fractions, seed: int, names: list[str], log=print) -> tuple[dict, dict]:
    """({fraction: training rows} to train on, {fraction: {'n_train', 'reason'}} for those that cannot be scored),
    with one `log` line for a subset grown by its forced rows and a warning for one that cannot be scored."""
    subsets, skipped = {}, {}
    for frac in fractions:
        rows = subsample_indices(y, frac, seed)
        drawn = int(len(y) * frac)
        if frac < 1 and len(rows) > drawn:
            log(f"fraction {frac:g}: int({len(y)} x {frac:g}) = {drawn} training row(s), {len(rows)} with the rows "
                f"that give every label a positive and a negative")
        reason = not_computable(y[rows], names)
        if reason:
            log(f"warning: fraction {frac:g} is not computable: {reason}")
            skipped[frac] = {"n_train": len(rows), "reason": reason}
        else:
            subsets[frac] = rows
    return subsets, skipped
