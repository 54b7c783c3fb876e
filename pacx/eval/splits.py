"""Stage-3 inputs of evaluate.py: the train / val / test rows of a task CSV (one CSV with a split column, or three
CSVs), and the alignment targets that follow them (METHOD.md "Stage 3").
"""
from dataclasses import dataclass

import numpy as np

from pacx.data.tables import read_table
from pacx.errors import PacxError

SPLITS = ("train", "val", "test")


@dataclass
class Part:
    """One split of an evaluation task: the data set, the split's rows in it, their image-column values (`keys`), the
    split's first row when the CSVs are stacked train, val, test (`offset`) and, for classification, the labels."""
    data: object
    rows: np.ndarray
    keys: list[str]
    offset: int = 0
    y: np.ndarray | None = None
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def read_splits(paths: tuple[str, ...], split_column: str, image_column: str) -> dict[str, dict]:
    """{split: {'csv', 'rows' (of that CSV), 'keys' (image-column values), 'offset' (first row of that CSV when the
    CSVs are stacked train, val, test)}} for ('all.csv',) (a split column) or ('train.csv', 'val.csv', 'test.csv')."""
    if len(paths) == 3:
        out, offset = {}, 0
        for split, path in zip(SPLITS, paths):
            keys = read_table(path, [image_column])[image_column].str.strip().tolist()
            out[split] = {"csv": path, "rows": np.arange(len(keys)), "keys": keys, "offset": offset}
            offset += len(keys)
        return out
    if len(paths) != 1:
        raise PacxError(f"expected one CSV with a {split_column!r} column or three (train,val,test), got "
                        f"{','.join(paths)!r}")
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


def load_targets(path: str, splits: dict[str, Part]) -> dict[str, dict[str, np.ndarray]]:
    """{'ecg' / 'labs': {split: (N_split, E)}} from the --align_features file, following the task's `splits`."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise PacxError(f"{path}: not a readable .npz file ({e})") from None
    names = [k for k in ("ecg", "labs") if k in data.files]
    if not names:
        raise PacxError(f"{path}: expected arrays 'ecg' and/or 'labs', found {data.files}")
    if "path" in data.files:
        index = {str(k).strip(): i for i, k in enumerate(data["path"])}
        missing = [k for part in splits.values() for k in part.keys if k not in index]
        if missing:
            raise PacxError(f"{path}: {len(missing)} task images have no row in 'path', first {missing[0]!r}")
        rows = {s: np.array([index[k] for k in part.keys]) for s, part in splits.items()}
    else:
        rows = {s: part.offset + part.rows for s, part in splits.items()}
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
