"""Physiology alignment probe (pacx/eval/alignment.py): a linear world is recovered (high R^2, cosine and R@1), random
features score at chance, and retrieval ranks / centring match hand examples."""
import numpy as np
import pytest
from sklearn.metrics import r2_score

from pacx.eval.alignment import alignment_probe, random_pair_baseline, retrieval_ranks, row_cosine


def world(n=300, d=24, e=16, seed=0, linked=True):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = x @ rng.normal(size=(d, e)) + 0.1 * rng.normal(size=(n, e)) + 20.0  # a common offset, as real embeddings have
    if not linked:
        x = rng.normal(size=(n, d))
    return x[:200], y[:200], x[200:], y[200:]


def test_linear_world_is_recovered():
    out = alignment_probe(*world())
    s = out["summary"]
    assert s["r2"] > 0.95 and s["cosine_centered"] > 0.95 and s["R@1"] > 0.9 and s["R@10"] == 1.0
    x_tr, y_tr, x_te, y_te = world()
    assert s["r2"] == pytest.approx(r2_score(y_te, out["pred"]))


def test_random_features_score_at_chance():
    out = alignment_probe(*world(linked=False))
    s = out["summary"]
    assert s["r2"] < 0.05
    assert s["R@1"] <= 0.05 and s["R@10"] <= 0.25  # chance: 1 / 100 and 10 / 100
    assert abs(s["cosine_centered"]) < 0.2
    assert s["cosine"] > 0.8  # raw cosine is high from the common offset alone: why centred scores are reported


def test_random_pair_baseline_centred_near_zero():
    _, y_tr, _, y_te = world()
    b = random_pair_baseline(y_te, y_tr.mean(0, keepdims=True))
    assert b["random_pair_cosine"] > 0.8 and abs(b["random_pair_cosine_centered"]) < 0.1


def test_retrieval_ranks_by_hand():
    target = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    pred = np.array([[1.0, 0.1], [1.0, 0.0], [1.0, 1.0]])
    # row 0: own target is the best match -> 0; row 1: (0,1) scores 0, below (1,0) and (1,1) -> 2; row 2: exact -> 0
    assert retrieval_ranks(pred, target).tolist() == [0, 2, 0]
    assert row_cosine(pred[1:2], target[2:3])[0] == pytest.approx(1 / np.sqrt(2))


def test_bad_input_is_one_line_error():
    x_tr, y_tr, x_te, y_te = world()
    y_te = y_te.copy()
    y_te[4, 2] = np.nan
    with pytest.raises(ValueError, match="y_test has a non-finite value at row 4, column 2"):
        alignment_probe(x_tr, y_tr, x_te, y_te)
