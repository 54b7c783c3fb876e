"""The checks every data adapter shares: CSV tables read as strings with their required columns, 0/1 label codes,
unique ids, file-path columns whose files must exist, and memory-mapped .npy arrays.

Every failure is a `DatasetFormatError`: one line naming the file, the line (the CSV header is line 1) and the
column, what was expected and what was found (STYLE.md point 15).
"""
from pathlib import Path

import numpy as np
import pandas as pd

from pacx.errors import DataError


class DatasetFormatError(DataError):
    """A data set file that does not have the expected layout; the message names file, line and column."""


def read_table(path: str | Path, columns=(), sep: str = ",", names=None) -> pd.DataFrame:
    """A CSV as strings (blank cells are ""), with `columns` required; errors name the file. `names`: the column
    names of a file without a header line (its data then start on line 1), `sep`: another field separator."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path}: no such file")
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark that would rename the first column
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig",
                         sep=sep, header=None if names else "infer", names=names)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetFormatError(f"{path}: not a readable CSV table ({type(err).__name__}: {err})") from err
    df = df.fillna("")  # rows shorter than the header give NaN even with keep_default_na=False
    header = pd.read_csv(path, header=None, nrows=1, dtype=str, skipinitialspace=True, encoding="utf-8-sig")
    names = [str(v).strip() for v in header.iloc[0].tolist()]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # pandas would rename the second one silently ("x.1"): which of the two is meant is unknowable
        raise DatasetFormatError(f"{path}: column {twice[0]!r} appears {names.count(twice[0])} times in the header; "
                                 f"expected unique column names")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DatasetFormatError(f"{path}: missing column {missing[0]!r} (found columns: {', '.join(df.columns)})")
    if len(df) == 0:
        raise DatasetFormatError(f"{path}: no data rows")
    return df


def cell_error(path, row: int, column: str, expected: str, found) -> DatasetFormatError:
    """Error for data row `row` (0-based), which is line row + 2 of the file."""
    return DatasetFormatError(f"{path}: line {row + 2}, column {column!r}: expected {expected}, found {found!r}")


def parse_codes(df: pd.DataFrame, columns, path, allowed=(0, 1), allow_blank: bool = False) -> np.ndarray:
    """(N, C) float32 matrix of the label cells; every cell must be one of `allowed` (blank -> NaN if allowed)."""
    out = np.empty((len(df), len(columns)), dtype=np.float32)
    expected = " or ".join(str(a) for a in allowed) + (" or blank" if allow_blank else "")
    for j, column in enumerate(columns):
        text = df[column].str.strip()
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)  # "1.0" -> 1; "yes" -> NaN
        blank = (text == "").to_numpy()
        ok = np.isin(values, allowed) | (blank & allow_blank)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise cell_error(path, i, column, expected, df[column].iloc[i])
        out[:, j] = values
    return out


def check_unique(values: pd.Series, path, column: str) -> None:
    dup = values.duplicated().to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((values == values.iloc[i]).to_numpy())[0])
        raise cell_error(path, i, column, f"unique ids (first seen on line {first + 2})", values.iloc[i])


def file_column(df: pd.DataFrame, column: str, root: Path, path, check_files: bool) -> list[Path]:
    """The column's file paths, relative ones taken under `root`; a blank cell is an error, and so (with
    `check_files`) is a file that does not exist."""
    text = df[column].str.strip()
    blank = (text == "").to_numpy()
    if blank.any():
        raise cell_error(path, int(np.flatnonzero(blank)[0]), column, "a file path", "")
    files = [Path(v) if Path(v).is_absolute() else root / v for v in text]
    if check_files:
        check_exist(files, path, column, root=None if all(Path(v).is_absolute() for v in text) else root)
    return files


def check_exist(files: list[Path], path, column: str, rows=None, root: Path | None = None) -> None:
    """Every file must exist; one line for all the misses. `rows[k]`: the data row that named files[k]
    (default k), for the line number in the message; `root`: the folder relative paths were read from, named in the
    message (with the folder above it when the files are there: a CheXpert-style CSV whose paths repeat its folder)."""
    missing = [k for k, p in enumerate(files) if not p.is_file()]
    if missing:
        k = missing[0]
        line = (k if rows is None else int(rows[k])) + 2
        hint = ""
        if root is not None and Path(files[k]).is_relative_to(root):
            relative = Path(files[k]).relative_to(root)
            up = next((r for r in Path(root).resolve().parents if (r / relative).is_file()), None)
            hint = f"; relative paths are read from {root} (--image_root)" + (
                f", and this file is under {up}: pass --image_root {up}" if up else "")
        raise DatasetFormatError(
            f"{path}: {len(missing)} of {len(files)} files in column {column!r} do not exist; "
            f"first on line {line}: {files[k]}{hint}"
        )


def load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DatasetFormatError(f"{path}: no such file")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)  # train CXR alone is ~12 GB: never read it whole
    except (ValueError, OSError, EOFError) as err:
        raise DatasetFormatError(f"{path}: not a readable .npy array ({type(err).__name__}: {err})") from err
    if arr.dtype.kind not in "biuf":
        raise DatasetFormatError(f"{path}: expected a numeric array, found dtype {arr.dtype}")
    return arr
