"""Stage-3 inputs and outputs for evaluate.py: the train / val / test rows of a task CSV, the alignment targets that
follow them, and the results as strict JSON and paper-style Markdown tables.

DESIGN.md "Stage 3" (outputs: every number with its 95% interval, one column per backbone, the paired difference
against the reference backbone).
"""
import math
from dataclasses import asdict, is_dataclass

import numpy as np

from pacx.data.datasets import read_table
from pacx.errors import PacxError

SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def read_splits(spec: str, split_column: str, image_column: str) -> dict[str, dict]:
    """{split: {'csv', 'rows' (of that CSV), 'keys' (image-column values), 'offset' (first row of that CSV when the
    CSVs are stacked train, val, test)}} for 'all.csv' (split column) or 'train.csv,val.csv,test.csv'."""
    paths = [p.strip() for p in spec.split(",") if p.strip()]
    if len(paths) == 3:
        out, offset = {}, 0
        for split, path in zip(SPLITS, paths):
            keys = read_table(path, [image_column])[image_column].str.strip().tolist()
            out[split] = {"csv": path, "rows": np.arange(len(keys)), "keys": keys, "offset": offset}
            offset += len(keys)
        return out
    if len(paths) != 1:
        raise PacxError(f"expected one CSV with a {split_column!r} column or three (train,val,test), got {spec!r}")
    df = read_table(paths[0], [split_column, image_column])
    split = df[split_column].str.strip().str.lower().map(SPLIT_NAMES)
    if split.isna().any():
        i = int(np.flatnonzero(split.isna().to_numpy())[0])
        raise PacxError(f"{paths[0]}: line {i + 2}, column {split_column!r}: expected train, val or test, found "
                        f"{df[split_column].iloc[i]!r}")
    out = {}
    for name in SPLITS:
        rows = np.flatnonzero((split == name).to_numpy())
        if not len(rows):
            raise PacxError(f"{paths[0]}: no row has {split_column} = {name}")
        out[name] = {"csv": paths[0], "rows": rows, "keys": df[image_column].str.strip().iloc[rows].tolist(),
                     "offset": 0}
    return out


def load_targets(path: str, splits: dict) -> dict[str, dict[str, np.ndarray]]:
    """{'ecg' / 'labs': {split: (N_split, E)}} from the --align_features file."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise PacxError(f"{path}: not a readable .npz file ({e})") from None
    names = [k for k in ("ecg", "labs") if k in data.files]
    if not names:
        raise PacxError(f"{path}: expected arrays 'ecg' and/or 'labs', found {data.files}")
    if "path" in data.files:
        index = {str(k).strip(): i for i, k in enumerate(data["path"])}
        missing = [k for s in splits.values() for k in s["keys"] if k not in index]
        if missing:
            raise PacxError(f"{path}: {len(missing)} task images have no row in 'path', first {missing[0]!r}")
        rows = {s: np.array([index[k] for k in info["keys"]]) for s, info in splits.items()}
    else:
        rows = {s: info["offset"] + info["rows"] for s, info in splits.items()}
    out = {}
    for name in names:
        arr = np.asarray(data[name], dtype=np.float64)
        need = max(int(r.max()) for r in rows.values()) + 1
        if arr.ndim != 2 or len(arr) < need:
            raise PacxError(f"{path}: '{name}' must be (rows, features) with at least {need} rows (one per task CSV "
                            f"row), found shape {arr.shape}")
        if not np.isfinite(arr).all():
            row = int(np.argwhere(~np.isfinite(arr))[0, 0])
            raise PacxError(f"{path}: '{name}' has a non-finite value in row {row}")
        out[name] = {s: arr[r] for s, r in rows.items()}
    return out


def jsonable(obj):
    """Intervals -> dicts, numpy -> Python, NaN -> null (strict JSON)."""
    if is_dataclass(obj):
        return jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


METRIC_NAMES = {"auroc": "AUROC", "accuracy": "accuracy", "precision": "precision", "recall": "recall",
                "f1": "F1 @0.5", "f1_tuned": "F1 @val-tuned thr.", "dice": "Dice", "iou": "IoU", "r2": "R²",
                "cosine": "cosine", "cosine_centered": "cosine centred", "cosine_centered_test_mean":
                "cosine centred (test mean, ref.)"}


def _cell(ci, signed: bool = False) -> str:
    if ci is None or not math.isfinite(ci.median):
        return "n/a"
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(ci.median)} [{f.format(ci.lo)}, {f.format(ci.hi)}]"


def table(rows: list[tuple[list[str], dict, dict]], lead: list[str], names: list[str], ref: str) -> list[str]:
    """Markdown rows: the `lead` columns (the last one a metric key, shown by its METRIC_NAMES name), one column per
    backbone, one per difference vs the reference."""
    others = [n for n in names if n != ref]
    head = lead + names + [f"{n} − {ref}" for n in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for lead_cells, values, deltas in rows:
        lead_cells = lead_cells[:-1] + [METRIC_NAMES.get(lead_cells[-1], lead_cells[-1])]
        cells = lead_cells + [_cell(values.get(n)) for n in names] + [_cell(deltas.get(n), True) for n in others]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
