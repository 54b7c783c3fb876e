"""Stage-3 metrics (pacx/eval/metrics.py) against scikit-learn on fixed inputs (binary, multilabel, multiclass), the
tuned threshold against sklearn's precision-recall curve, and Dice / IoU against a hand count."""
import numpy as np
import pytest
import torch
from sklearn.metrics import (balanced_accuracy_score, f1_score, precision_recall_curve, precision_score,
                             recall_score, roc_auc_score)

from pacx.eval.metrics import (best_f1_threshold, classification_metrics, dice_iou, macro_auroc, single_class_columns,
                          tune_threshold)


def binary_data(n=80, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0, 1).round(1)  # rounded: many ties
    return y, p


def test_binary_equals_sklearn():
    y, p = binary_data()
    m = classification_metrics(y[:, None].astype(float), p[:, None], "binary")
    pred = (p >= 0.5).astype(int)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m["accuracy"] == pytest.approx((pred == y).mean())
    assert m["precision"] == pytest.approx(precision_score(y, pred, zero_division=0))
    assert m["recall"] == pytest.approx(recall_score(y, pred, zero_division=0))
    assert m["f1"] == pytest.approx(f1_score(y, pred, zero_division=0))
    assert 0.6 < m["auroc"] < 1.0  # the data carry signal, so the comparison is not between two trivial values


def test_multilabel_equals_sklearn_and_skips_single_class_column():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (60, 4)).astype(float)
    y[:, 3] = 0  # one class only: no AUROC for this column
    p = np.clip(0.35 * y + rng.uniform(0, 0.65, y.shape), 0, 1)
    p[:, 1] *= 0.4  # never reaches 0.5: precision 0/0 -> 0 for this column
    m = classification_metrics(y, p, "multilabel")
    pred = (p >= 0.5).astype(int)
    assert single_class_columns(y, p, "multilabel") == [3]
    assert m["auroc"] == pytest.approx(roc_auc_score(y[:, :3], p[:, :3], average="macro"), abs=1e-12)
    assert m["accuracy"] == pytest.approx(np.mean([(pred[:, c] == y[:, c]).mean() for c in range(4)]))
    for key, fn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        assert m[key] == pytest.approx(fn(y, pred, average="macro", zero_division=0)), key


def test_multiclass_equals_sklearn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 90)
    logits = rng.normal(size=(90, 3)) + 1.5 * np.eye(3)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = classification_metrics(y, p, "multiclass")
    pred = p.argmax(1)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-12)
    assert m["accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))  # torchmetrics' macro accuracy
    for key, fn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        assert m[key] == pytest.approx(fn(y, pred, average="macro", zero_division=0)), key
    assert tune_threshold(y, p, "multiclass") is None and "f1_tuned" not in m


def test_auroc_all_single_class_is_nan():
    assert np.isnan(macro_auroc(np.ones((5, 1)), np.linspace(0, 1, 5)[:, None], "binary"))


def test_tuned_threshold_reaches_best_f1_of_precision_recall_curve():
    y, p = binary_data(n=120, seed=3)
    prec, rec, _ = precision_recall_curve(y, p)
    with np.errstate(invalid="ignore", divide="ignore"):
        best = np.nanmax(2 * prec * rec / (prec + rec))
    t, f1 = best_f1_threshold(y, p)
    assert f1 == pytest.approx(best)
    assert f1_score(y, (p >= t).astype(int)) == pytest.approx(best)
    thresholds = tune_threshold(y[:, None].astype(float), p[:, None], "binary")
    m = classification_metrics(y[:, None].astype(float), p[:, None], "binary", thresholds)
    assert m["f1_tuned"] == pytest.approx(best) and m["f1_tuned"] >= m["f1"]


def test_dice_iou_hand_count():
    eps = 1e-6
    logits = torch.full((2, 1, 4, 4), -5.0)
    masks = torch.zeros(2, 1, 4, 4)
    logits[0, 0, 0, :3] = 5.0  # predicted: 3 pixels
    masks[0, 0, 0, 1:] = 1.0  # true: 3 pixels, 2 shared with the prediction
    masks[0, 0, 1, 0] = 1.0  # one more true pixel: 4 in all
    dice, iou = dice_iou(logits, masks)  # image 1 is empty in both: a perfect (eps / eps) score
    assert dice.tolist() == pytest.approx([(2 * 2 + eps) / (3 + 4 + eps), 1.0])
    assert iou.tolist() == pytest.approx([(2 + eps) / (3 + 4 - 2 + eps), 1.0])


def test_wilson_interval_against_its_formula_and_coverage():
    """Wilson's interval: the textbook value for 8 of 40 (z = 1.96), inside [0, 1] at 0 hits, and a coverage near
    95% for a rate near chance (p = 1/64, n = 300) over 2000 simulated experiments."""
    import math

    from pacx.eval.metrics import wilson_interval

    lo, hi = wilson_interval(8, 40)
    z, p, n = 1.959964, 0.2, 40
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (lo, hi) == pytest.approx((c - h, c + h), abs=1e-6)
    assert wilson_interval(0, 50)[0] == pytest.approx(0.0, abs=1e-12) and 0 < wilson_interval(0, 50)[1] < 0.1
    rng = np.random.default_rng(0)
    k = rng.binomial(300, 1 / 64, size=2000)
    covered = np.mean([lo <= 1 / 64 <= hi for lo, hi in (wilson_interval(x, 300) for x in k)])
    assert 0.93 <= covered <= 0.985, covered
