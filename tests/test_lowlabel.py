"""Low-label subsets (pacx/eval/lowlabel.py): deterministic, a positive for every label / class, nested fractions."""
import numpy as np

from pacx.eval.lowlabel import low_label_subsets, not_computable, subsample_indices


def multilabel(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 5)) < [0.3, 0.1, 0.05, 0.01, 0.0]).astype(np.float32)
    y[[17, 923], 4] = 1.0  # a very rare label: 2 positives in 1000
    return y


def test_deterministic_and_seed_dependent():
    y = multilabel()
    a, b = subsample_indices(y, 0.01, seed=3), subsample_indices(y, 0.01, seed=3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, subsample_indices(y, 0.01, seed=4))


def test_positive_per_label_and_size():
    y = multilabel()
    for seed in range(5):
        rows = subsample_indices(y, 0.01, seed=seed)
        assert len(rows) == 10 and len(np.unique(rows)) == 10
        assert (y[rows].sum(0) >= 1).all()  # even the 2-in-1000 label


def test_nested_fractions_and_full():
    y = multilabel()
    small, mid = set(subsample_indices(y, 0.01, 1)), set(subsample_indices(y, 0.1, 1))
    assert small <= mid and len(mid) == 100
    assert np.array_equal(subsample_indices(y, 1.0, 1), np.arange(len(y)))


def test_multiclass_every_class_and_binary_column():
    rng = np.random.default_rng(2)
    y = rng.choice(4, size=500, p=[0.7, 0.2, 0.09, 0.01])
    rows = subsample_indices(y, 0.01, seed=0)
    assert set(y[rows]) == set(y)
    binary = np.zeros(300, np.float32)
    binary[123] = 1.0
    assert 123 in subsample_indices(binary, 0.01, seed=7)
    assert len(subsample_indices(np.zeros((50, 2)), 0.01, seed=0)) == 1  # no positive to force; at least one row


def test_a_negative_is_forced_too_and_the_one_row_probe_is_gone():
    """132 training rows, 1%: int(1.32) = 1 row. Mostly-positive labels (a common finding) need a negative forced just
    as rare ones need a positive: the subset holds both classes of every label."""
    y = np.ones((132, 2), np.float32)
    y[57, 0] = 0.0  # the one negative of label 0
    y[[3, 99], 1] = 0.0
    for seed in range(5):
        rows = subsample_indices(y, 0.01, seed=seed)
        assert 57 in rows and (3 in rows or 99 in rows)
        assert (y[rows].min(0) == 0).all() and (y[rows].max(0) == 1).all()
        assert set(rows) <= set(subsample_indices(y, 0.1, seed=seed))  # still nested
    binary = np.zeros(132, np.float32)
    binary[[10, 20]] = 1.0
    rows = subsample_indices(binary, 0.01, seed=0)
    assert len(rows) == 2 and sorted(binary[rows]) == [0.0, 1.0]  # not the single-positive probe of the reference


def test_not_computable_names_the_missing_class():
    y = np.array([[1, 0], [1, 1], [1, 0]], np.float32)
    assert not_computable(y, ["a", "b"]) == "the 3 training rows hold no negative of 'a'"
    assert not_computable(y[[0, 2]], ["a", "b"]) == "the 2 training rows hold no negative of 'a' and no positive of 'b'"
    assert not_computable(y[:, 1:], ["b"]) == ""
    assert not_computable(np.array([2, 2, 2]), []) == "the 3 training rows hold one class only"
    assert not_computable(np.array([0, 2, 2]), []) == ""
    subsets, skipped = low_label_subsets(y, (0.5, 1.0), 0, ["a", "b"], log=lambda line: None)
    assert subsets == {} and skipped[1.0] == {"n_train": 3, "reason": "the 3 training rows hold no negative of 'a'"}
