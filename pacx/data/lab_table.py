"""A user's lab table -> the 50 reference lab columns: which column is which lab, unit checks, and what is left out.

Implements the lab-table part of METHOD.md "Data formats users have" for Stage 1b (train_labs.py) and Stage 2
(train_distill.py --labs_table), which read tables by the same rule:
- a column is a lab by an explicit mapping (`--lab_columns crea=50912,hb=51222` or a `--lab_map` CSV with columns
  `column,itemid`), else by its own name: an itemid ("50912") or a METHOD.md name ("Creatinine", any case);
- any subset of the 50 labs will do: a lab without a column is never measured (the DAE's observed flag 0), and one
  line lists those labs; one more line lists the columns used for nothing (the id column is not one of them);
- cells are numbers, "inf" / "-inf" (beyond a detection limit), or empty / NA / NaN / null for "not measured".

Units. MIMIC-IV reports the white-cell differential twice: as a share of the white cells (labevents valueuom "%":
51244 Lymphocytes, 51256 Neutrophils, 51254 Monocytes, 51200 Eosinophils, 51146 Basophils) and as an absolute count
(valueuom "K/uL", i.e. 10^9/L: 51133, 52075, 52074, 52073, 52069). Exports usually hold one of the two under a bare
name such as "lymphocytes", so a column can land on the wrong one. Two checks follow from the units:
- a percentage lies in [0, 100]: a column read as a % lab with a value above 100 holds counts;
- for lymphocytes and neutrophils, the two large fractions, the two units do not overlap in practice: adult reference
  ranges are about 20-40 % vs 1.0-4.0 K/uL and 40-75 % vs 1.5-7.5 K/uL. A column's median (finite values, at least
  5 of them: fewer say little about a column) decides: below sqrt(upper count limit x lower percent limit) (8.9 and
  17.3) it holds counts, above it percentages.
  Monocytes, eosinophils and basophils are small fractions whose % and K/uL values overlap (a few % vs below 1 K/uL,
  both often below 1), so only the first check applies to them.
A failed check is an error naming the column and the two candidate labs: percentiles are fitted per column, so a
wrong unit would not break the numbers, it would feed the DAE's slot for one quantity with another.

Notation: N = rows, L = 50 labs.
"""
import math

import numpy as np
import pandas as pd

from pacx.data.labs import LAB_COLUMNS, LAB_ITEMIDS, LAB_NAMES, N_LABS, describe_lab, lab_index
from pacx.data.tables import read_table
from pacx.errors import DataError, PacxError

LAB_COLUMNS_HELP = ("lab table: COLUMN=LAB pairs naming the lab of each of your columns (LAB: a MIMIC-IV itemid such "
                    "as 50912, or a name from METHOD.md \"Stage 1b\"), e.g. crea=50912,hb=51222")
LAB_MAP_HELP = "lab table: a CSV with columns column,itemid, one row per mapped column (as --lab_columns)"

# Cells that mean "not measured" (compared after strip + lower-case). Everything else must parse as a number.
_MISSING_TOKENS = ("", "na", "n/a", "nan", "null")
# % of the white cells -> the absolute count of the same cells (K/uL), MIMIC-IV itemids.
PERCENT_TO_COUNT = {51244: 51133, 51256: 52075, 51254: 52074, 51200: 52073, 51146: 52069}
COUNT_TO_PERCENT = {c: p for p, c in PERCENT_TO_COUNT.items()}
# Lymphocytes and neutrophils: (upper reference limit of the count in K/uL, lower one of the percentage); the median
# that separates the two units is their geometric mean (see the module docstring).
_REFERENCE_LIMITS = {51244: (4.0, 20.0), 51256: (7.5, 40.0)}
UNIT_BOUNDARY = {p: math.sqrt(count_hi * pct_lo) for p, (count_hi, pct_lo) in _REFERENCE_LIMITS.items()}
MEDIAN_MIN_VALUES = 5


def lab_mapping(pairs=(), map_file: str = "") -> dict[str, int]:
    """{your column: itemid} from `--lab_columns` pairs ("crea=50912") and a `--lab_map` CSV (columns column,itemid);
    a lab may be given by itemid or name. Errors name the option or the file line."""
    entries = []  # (column, lab as written, where it was written)
    for pair in pairs:
        column, sep, lab = pair.rpartition("=")  # lab ids and names hold no '=': a column name may
        if not sep or not column.strip() or not lab.strip():
            raise PacxError(f"--lab_columns: expected COLUMN=LAB pairs such as crea=50912, got {pair!r}")
        entries.append((column.strip(), lab.strip(), "--lab_columns"))
    if map_file:
        table = read_table(map_file, ["column", "itemid"])
        entries += [(c.strip(), lab.strip(), f"{map_file}: line {i + 2}")
                    for i, (c, lab) in enumerate(zip(table["column"], table["itemid"]))]
    mapping, where = {}, {}
    for column, lab, source in entries:
        j = lab_index(lab)
        if j is None:
            raise PacxError(f"{source}: column {column!r} is mapped to {lab!r}, which is not one of the 50 labs "
                            f"(expected an itemid such as 50912 or a name such as 'Creatinine'; the list: "
                            f"METHOD.md \"Stage 1b\")")
        if column in mapping:
            raise PacxError(f"{source}: column {column!r} is mapped twice (also in {where[column]})")
        mapping[column], where[column] = LAB_ITEMIDS[j], source
    return mapping


def _parse_numbers(cells: pd.Series, path, column: str) -> np.ndarray:
    """One CSV column of strings -> float64, NaN for the missing tokens; any other non-number is an error."""
    text = cells.fillna("").astype(str).str.strip()  # short rows give NaN even with keep_default_na=False
    # to_numeric reads "inf", "-inf", "Infinity"; copy=True because pandas may hand back a read-only view.
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, copy=True)
    blank = text.str.lower().isin(_MISSING_TOKENS).to_numpy()
    bad = np.flatnonzero(np.isnan(values) & ~blank)
    if len(bad):
        i = int(bad[0])
        raise DataError(
            f"{path}: line {i + 2} (data row {i + 1}), column '{column}': expected a number, an empty cell or "
            f"inf/-inf, found {text.iloc[i]!r} ({len(bad)} such cell(s) in this column)"
        )
    values[blank] = np.nan
    return values


def check_units(values: np.ndarray, j: int, path, column: str) -> None:
    """Refuse a column whose values contradict the MIMIC-IV unit of its lab (the module docstring gives the rule)."""
    finite = values[np.isfinite(values)]
    itemid = LAB_ITEMIDS[j]
    if not len(finite) or itemid not in PERCENT_TO_COUNT and itemid not in COUNT_TO_PERCENT:
        return
    percent = itemid if itemid in PERCENT_TO_COUNT else COUNT_TO_PERCENT[itemid]
    count = PERCENT_TO_COUNT[percent]
    median = float(np.median(finite))
    boundary = UNIT_BOUNDARY.get(percent) if len(finite) >= MEDIAN_MIN_VALUES else None
    if itemid == percent and finite.max() > 100:
        found = f"values above 100 (up to {finite.max():g}), which no percentage can be"
    elif itemid == percent and boundary is not None and median < boundary:
        found = f"absolute counts (median {median:g}, below {boundary:.1f})"
    elif itemid == count and boundary is not None and median > boundary:
        found = f"percentages (median {median:g}, above {boundary:.1f})"
    else:
        return
    other = count if itemid == percent else percent
    unit = {percent: "%", count: "K/uL"}
    raise DataError(f"{path}: column '{column}' is read as lab {itemid} ({LAB_NAMES[j]}, {unit[itemid]}) but holds "
                    f"{found}; {other} ({LAB_NAMES[LAB_ITEMIDS.index(other)]}) is the same cells in {unit[other]}: "
                    f"map the column to the lab it holds (--lab_columns '{column}={other}')")


def read_lab_table(path, id_column: str | None = None, columns: dict | None = None, log=print) -> pd.DataFrame:
    """Read a lab CSV into a DataFrame: [id_column] + the 50 LAB_COLUMNS, NaN = not measured (the module docstring
    gives the rule). `columns`: {your column: itemid or lab name} (`lab_mapping`'s result). The values of
    `id_column` name the rows, so each must be unique. `log` gets the line listing the labs without a column and the
    one listing the columns not used."""
    raw = read_table(path)  # one-line errors for a missing, unreadable or empty table and repeated column names
    header = list(raw.columns)
    if id_column is not None and id_column not in header:
        raise DataError(f"{path}: id column '{id_column}' not found; the file has columns {header}")
    if id_column is not None:
        ids = raw[id_column].str.strip()
        dup = ids.duplicated().to_numpy()
        if dup.any():
            i = int(np.flatnonzero(dup)[0])
            first = int(np.flatnonzero((ids == ids.iloc[i]).to_numpy())[0])
            raise DataError(f"{path}: line {i + 2}, column '{id_column}': expected unique ids, found "
                            f"{ids.iloc[i]!r} again (first on line {first + 2})")
    mapping = dict(columns or {})
    for key in mapping:
        if key not in header or key == id_column:
            why = "is the id column" if key == id_column else "is not in the file"
            raise DataError(f"{path}: column '{key}' given in the lab mapping (--lab_columns / --lab_map) {why}; "
                            f"the file has {header}")

    source: dict[int, str] = {}  # lab position -> CSV column
    unused = []
    for col in header:
        if col == id_column:
            continue
        j = lab_index(mapping[col]) if col in mapping else lab_index(col)
        if j is None and col in mapping:
            raise DataError(f"{path}: the lab mapping maps '{col}' to {mapping[col]!r}, which is not one of the 50 "
                            f"labs (expected an itemid such as 50802 or a name such as 'Base Excess')")
        if j is None:
            unused.append(col)
            continue
        if j in source:
            raise DataError(f"{path}: columns '{source[j]}' and '{col}' both give lab {describe_lab(j)}")
        source[j] = col
    if not source:
        raise DataError(f"{path}: no column is one of the 50 labs of METHOD.md \"Stage 1b\" (by itemid such as 50912 "
                        f"or name such as 'Creatinine'); name the lab of each of your columns with --lab_columns "
                        f"COLUMN=ITEMID or --lab_map FILE (the file has {header})")

    out = {} if id_column is None else {id_column: raw[id_column].to_numpy()}
    for j, name in enumerate(LAB_COLUMNS):
        out[name] = np.full(len(raw), np.nan)
        if j in source:
            out[name] = _parse_numbers(raw[source[j]], path, source[j])
            check_units(out[name], j, path, source[j])
    absent = [j for j in range(N_LABS) if j not in source]
    if absent:
        log(f"{path}: {len(absent)} of the 50 labs have no column and count as never measured: "
            + ", ".join(describe_lab(j) for j in absent))
    if unused:
        log(f"{path}: {len(unused)} column(s) not used (none is one of the 50 labs; map one with --lab_columns "
            f"COLUMN=ITEMID): " + ", ".join(unused))
    return pd.DataFrame(out)

