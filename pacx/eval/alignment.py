"""Physiology alignment probe: how much ECG and lab information a frozen CXR feature carries linearly.

Implements METHOD.md "Stage 3" (Physiology alignment probe) after the reference PaCX-MAE (Lyce24/PACX-MAE
`Stage3_ALI.py::evaluate_physiology`): StandardScaler + Ridge(alpha=10, solver "svd") fitted on the training split
from CLS features (N, D) to the frozen ECG (1024) or lab (256) embeddings; on the test split
- R^2 (scikit-learn `r2_score`, uniform average over target dimensions);
- mean cosine between prediction and target, raw and centred. `cosine_centered` subtracts the *training* targets'
  mean from both (no test statistics used); `cosine_centered_test_mean` subtracts the test targets' mean as the
  reference does;
- a random-pair baseline: the cosine between a test target and the target of a random other row (a seeded
  permutation, as the reference), raw and centred; it depends on the targets only, not on the backbone;
- retrieval R@1/5/10: for each test row the true target's rank among all test targets by cosine to the prediction;
  a hit at k when fewer than k other targets score strictly higher (ties count in the query's favour; the reference's
  argpartition breaks them arbitrarily).

Notation: N = rows, D = CXR feature width, E = target width.
"""
import numpy as np
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

RETRIEVAL_KS = (1, 5, 10)


def _check(name: str, a, rows: int | None = None) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"alignment: {name} must be 2-D (rows, features), found shape {a.shape}")
    if rows is not None and len(a) != rows:
        raise ValueError(f"alignment: {name} has {len(a)} rows, expected {rows}")
    if not np.isfinite(a).all():
        r, c = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"alignment: {name} has a non-finite value at row {r}, column {c}")
    return a


def fit_ridge(x_train: np.ndarray, y_train: np.ndarray, alpha: float = 10.0) -> Pipeline:
    x_train = _check("x_train", x_train)
    y_train = _check("y_train", y_train, len(x_train))
    return make_pipeline(StandardScaler(), Ridge(alpha=alpha, solver="svd")).fit(x_train, y_train)


def row_cosine(a: np.ndarray, b: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """(N,) cosine of matching rows."""
    return (a * b).sum(1) / ((np.linalg.norm(a, axis=1) + eps) * (np.linalg.norm(b, axis=1) + eps))


def retrieval_ranks(pred: np.ndarray, target: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """(N,) rank (0 = first) of row i's own target among all N targets, by cosine to prediction i."""
    p = pred / (np.linalg.norm(pred, axis=1, keepdims=True) + eps)
    t = target / (np.linalg.norm(target, axis=1, keepdims=True) + eps)
    sim = p @ t.T  # (N, N)
    return (sim > np.diag(sim)[:, None]).sum(1)


def per_row_scores(pred: np.ndarray, y_test: np.ndarray, train_mean: np.ndarray,
                   ks=RETRIEVAL_KS) -> dict[str, np.ndarray]:
    """Per test row: cosine raw and centred (train mean; test mean as the reference) and the retrieval hits."""
    test_mean = y_test.mean(0, keepdims=True)
    ranks = retrieval_ranks(pred, y_test)
    out = {
        "cosine": row_cosine(pred, y_test),
        "cosine_centered": row_cosine(pred - train_mean, y_test - train_mean),
        "cosine_centered_test_mean": row_cosine(pred - test_mean, y_test - test_mean),
    }
    out.update({f"R@{k}": (ranks < k).astype(np.float64) for k in ks})
    return out


def summarize(y_test: np.ndarray, pred: np.ndarray, rows: dict[str, np.ndarray], idx: np.ndarray) -> dict:
    """R^2 on the rows `idx` and the mean of each per-row score there (a bootstrap calls this per resample)."""
    out = {"r2": float(r2_score(y_test[idx], pred[idx], multioutput="uniform_average"))}
    out.update({k: float(v[idx].mean()) for k, v in rows.items()})
    return out


def random_pair_baseline(y_test: np.ndarray, train_mean: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Mean cosine between each test target and a random test target (raw, and centred with the train mean)."""
    perm = np.random.default_rng(seed).permutation(len(y_test))
    return {"random_pair_cosine": float(row_cosine(y_test, y_test[perm]).mean()),
            "random_pair_cosine_centered": float(row_cosine(y_test - train_mean, y_test[perm] - train_mean).mean())}


def alignment_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                    alpha: float = 10.0, ks=RETRIEVAL_KS) -> dict:
    """Fit the ridge probe and score it: {'pred': (N, E), 'rows': per-row scores, 'summary': their means + R^2}."""
    model = fit_ridge(x_train, y_train, alpha)
    x_test = _check("x_test", x_test)
    y_test = _check("y_test", y_test, len(x_test))
    pred = model.predict(x_test)
    train_mean = np.asarray(y_train, dtype=np.float64).mean(0, keepdims=True)
    rows = per_row_scores(pred, y_test, train_mean, ks)
    return {"pred": pred, "rows": rows, "summary": summarize(y_test, pred, rows, np.arange(len(y_test)))}
