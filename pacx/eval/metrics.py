"""Classification and segmentation metrics of the Stage-3 evaluation, in numpy.

Implements METHOD.md "Stage 3" (Metrics): AUROC (macro over label columns for multilabel, one-vs-rest macro for
multiclass), accuracy, precision, recall and macro-F1 at the fixed threshold 0.5 (the reference does no threshold
tuning), plus an extra F1 at a per-column threshold tuned on the validation split; Dice and IoU at sigmoid > 0.5.
The definitions follow the torchmetrics classes the reference PaCX-MAE uses (Lyce24/PACX-MAE `Modules/cl_lit.py`:
`Binary*`, `Multilabel*(average="macro")`, `Multiclass*(average="macro")`; `Modules/seg_lit.py` for Dice / IoU):
- binary: one probability column; precision / recall / F1 of the positive class, prediction p >= 0.5;
- multilabel: each column is a binary problem at p >= 0.5; every score is the mean over columns (a column without
  predicted positives has precision 0, as torchmetrics and scikit-learn's zero_division=0);
- multiclass: prediction argmax; precision / recall / F1 are macro means over the classes that occur in the labels
  or the predictions, and "accuracy" is torchmetrics' macro accuracy, i.e. the mean per-class recall (balanced
  accuracy), not the fraction of correct rows.
AUROC is the Mann-Whitney statistic with average ranks for ties (equal to scikit-learn's `roc_auc_score`). A column
(multilabel) or class (multiclass) whose labels hold one class only has no AUROC: it is left out of the macro mean
and `single_class_columns` names it so the caller can say so.

Notation: N = samples, C = label columns (binary 1, multilabel C, multiclass K classes).
"""
import math

import numpy as np
import torch
from scipy.stats import rankdata

TASKS = ("binary", "multilabel", "multiclass")


def check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, found {task!r}")


def one_hot_targets(y: np.ndarray, p: np.ndarray, task: str) -> np.ndarray:
    """Labels as a (N, C) 0/1 matrix matching the (N, C) probabilities (multiclass ids become one-hot)."""
    check_task(task)
    p = np.asarray(p)
    if task == "multiclass":
        y = np.asarray(y).astype(np.int64).reshape(-1)
        return (y[:, None] == np.arange(p.shape[1])[None]).astype(np.float64)  # (N, K)
    return np.asarray(y, dtype=np.float64).reshape(len(y), -1)  # (N, C)


def probabilities_2d(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return p.reshape(len(p), -1)  # (N,) -> (N, 1)


def auroc_per_column(y2: np.ndarray, p2: np.ndarray) -> np.ndarray:
    """(C,) AUROC of each column of 0/1 labels `y2` (N, C) against scores `p2` (N, C); NaN where a column holds one
    class only. AUC = (rank sum of the positives - P (P + 1) / 2) / (P * Nn), with average ranks for ties."""
    ranks = rankdata(p2, axis=0)  # (N, C), ties share their average rank
    pos = y2.sum(axis=0)
    neg = len(y2) - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * y2).sum(axis=0) - pos * (pos + 1) / 2) / (pos * neg)
    auc[(pos == 0) | (neg == 0)] = np.nan
    return auc


def single_class_columns(y: np.ndarray, p: np.ndarray, task: str) -> list[int]:
    """Columns (multilabel / binary) or classes (multiclass) whose labels hold one class only: no AUROC there."""
    y2 = one_hot_targets(y, p, task)
    pos = y2.sum(axis=0)
    return [int(c) for c in np.flatnonzero((pos == 0) | (pos == len(y2)))]


def macro_auroc(y: np.ndarray, p: np.ndarray, task: str) -> float:
    """Binary AUROC, multilabel macro AUROC over columns, multiclass one-vs-rest macro AUROC over classes; single-
    class columns are skipped; NaN when none is left."""
    auc = auroc_per_column(one_hot_targets(y, p, task), probabilities_2d(p))
    return float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")


def _counts(y2: np.ndarray, pred2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column true positives, false positives, false negatives of 0/1 matrices (N, C)."""
    tp = (pred2 * y2).sum(axis=0)
    fp = (pred2 * (1 - y2)).sum(axis=0)
    fn = ((1 - pred2) * y2).sum(axis=0)
    return tp, fp, fn


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den is 0 (zero_division=0)."""
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def thresholded_scores(y: np.ndarray, p: np.ndarray, task: str, thresholds=0.5) -> dict[str, float]:
    """Accuracy, precision, recall and F1 (macro over columns / classes) of the hard predictions."""
    y2, p2 = one_hot_targets(y, p, task), probabilities_2d(p)
    if task == "multiclass":
        pred2 = (p2.argmax(axis=1)[:, None] == np.arange(p2.shape[1])[None]).astype(np.float64)  # (N, K)
    else:
        pred2 = (p2 >= np.asarray(thresholds, dtype=np.float64)).astype(np.float64)  # (N, C)
    tp, fp, fn = _counts(y2, pred2)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    if task == "multiclass":
        present = (tp + fp + fn) > 0  # classes absent from labels and predictions do not count (torchmetrics)
        precision, recall, f1 = precision[present], recall[present], f1[present]
        accuracy = recall.mean()  # torchmetrics MulticlassAccuracy(average="macro"): mean per-class recall
    else:
        accuracy = (pred2 == y2).mean()  # per-column accuracy, then the mean over columns
    return {"accuracy": float(accuracy), "precision": float(precision.mean()), "recall": float(recall.mean()),
            "f1": float(f1.mean())}


def classification_metrics(y: np.ndarray, p: np.ndarray, task: str, thresholds=None) -> dict[str, float]:
    """AUROC, accuracy, precision, recall, F1 at 0.5 and, when tuned `thresholds` (C,) are given (binary /
    multilabel), `f1_tuned`: the macro-F1 at those thresholds. `p` holds probabilities: sigmoid outputs (N,) or
    (N, C) for binary / multilabel, softmax rows (N, K) for multiclass; `y` 0/1 labels or class ids (N,)."""
    check_task(task)
    if len(y) != len(p):
        raise ValueError(f"labels have {len(y)} rows but predictions {len(p)}")
    out = {"auroc": macro_auroc(y, p, task), **thresholded_scores(y, p, task)}
    if thresholds is not None and task != "multiclass":
        out["f1_tuned"] = thresholded_scores(y, p, task, thresholds)["f1"]
    return out


def best_f1_threshold(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1 of `p >= threshold` for one 0/1 column. Every cut between two distinct scores
    is tried; the threshold is the midpoint of that gap (the lowest score when all rows are predicted positive).
    A column without positives gets (0.5, 0.0)."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    positives = y.sum()
    if positives == 0:
        return 0.5, 0.0
    order = np.argsort(-p, kind="stable")
    p_sorted, y_sorted = p[order], y[order]
    last_of_run = np.r_[p_sorted[1:] != p_sorted[:-1], True]  # cut after each run of equal scores
    tp = np.cumsum(y_sorted)[last_of_run]
    fp = np.cumsum(1 - y_sorted)[last_of_run]
    f1 = 2 * tp / (tp + fp + positives)  # 2 tp / (2 tp + fp + fn) with fn = P - tp
    k = int(np.argmax(f1))
    scores = p_sorted[last_of_run]
    threshold = (scores[k] + scores[k + 1]) / 2 if k + 1 < len(scores) else scores[k]
    return float(threshold), float(f1[k])


def tune_threshold(y_val: np.ndarray, p_val: np.ndarray, task: str = "multilabel") -> np.ndarray | None:
    """Per-column thresholds (C,) maximising each column's F1 on the validation split; None for multiclass, where
    the prediction is the argmax and there is no threshold."""
    check_task(task)
    if task == "multiclass":
        return None
    y2, p2 = one_hot_targets(y_val, p_val, task), probabilities_2d(p_val)
    return np.array([best_f1_threshold(y2[:, c], p2[:, c])[0] for c in range(p2.shape[1])])


@torch.no_grad()
def dice_iou(logits: torch.Tensor, masks: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image Dice and IoU (B,) of the prediction sigmoid(logits) > 0.5 against 0/1 masks, both (B, 1, H, W).

    Same formula and eps as the reference's `_compute_loss_and_metrics`, but per image: the reference pools the
    counts over each batch, which weights large masks more and makes the score depend on the batch size; a
    per-image score is the usual report and is what a bootstrap over images needs.
    """
    if logits.shape != masks.shape:
        raise ValueError(f"dice_iou: logits {tuple(logits.shape)} and masks {tuple(masks.shape)} differ in shape")
    pred = (logits.float().sigmoid() > 0.5).float().flatten(1)  # (B, H*W)
    target = masks.float().flatten(1)  # (B, H*W)
    inter = (pred * target).sum(1)
    total = pred.sum(1) + target.sum(1)
    dice = (2 * inter + eps) / (total + eps)
    iou = (inter + eps) / (total - inter + eps)
    return dice, iou


def wilson_interval(hits: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion hits / n (Wilson 1927): unlike the normal approximation it stays in
    [0, 1] and is sound for rates near 0, such as retrieval near chance."""
    from scipy.stats import norm

    if n <= 0:
        return float("nan"), float("nan")
    z, p = norm.ppf(0.5 + level / 2), hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
