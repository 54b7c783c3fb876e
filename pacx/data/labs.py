"""Lab values -> percentiles: the 50 reference labs and the empirical-CDF transform (a user's lab table is read by
`pacx.data.lab_table`).

Implements METHOD.md "Stage 1b" (the inputs of the lab denoising autoencoder) and the labs part of "Data formats
users have". Symile-MIMIC ships the two arrays ready-made (`labs_percentiles_{split}.npy`,
`labs_missingness_{split}.npy`, 1 = observed); this file makes the same pair from a raw labs CSV. It follows
rajesh-lab/symile `process_and_save_tensors.py::get_labs`: labs in ascending itemid order, a missing lab replaced by
that lab's mean training percentile, indicator 1 = observed. train_labs.py saves the transform it fitted as
LAB_TRANSFORM beside its checkpoint, and Stage 2 transforms with that file, so the DAE sees the numbers it was
trained on.

Percentile of a value x for one lab (the right-continuous empirical CDF, the "weak" percentile rank):

    F(x) = #{training values <= x} / #{training values}

so F is in [0, 1], tied values share the highest rank, a value below every training value gives 0 and one at or
above the largest gives 1. This is scipy.stats.percentileofscore(train, x, kind="weak") / 100. NaN is "not
measured": ignored by fit, imputed by transform. Symile's shipped percentiles may break ties differently, so
numbers made here are close to, not equal to, theirs.

Infinities: a cell "-inf" / "inf" (below / above the detection limit, as in real lab exports) is an observed
value at the extreme. It takes part in fit like any number, so +inf always maps to 1 and -inf to the fraction
of training values that are -inf (0 when the training split has none).

A lab with no training value at all (e.g. a column the user's table lacks) gets 0.5 as its imputed percentile
(the mean of a continuous ECDF); an observed value of such a lab at transform time is an error.

Notation: N = rows (admissions), L = 50 labs.
"""
import json
from pathlib import Path

import numpy as np
import pandas as pd

from pacx.errors import DataError

# METHOD.md "Stage 1b": MIMIC-IV itemids, ascending, which is the column order of Symile-MIMIC's arrays.
LAB_ITEMIDS = (
    50802, 50804, 50813, 50818, 50820, 50821, 50861, 50862, 50863, 50868,
    50878, 50882, 50885, 50893, 50902, 50910, 50912, 50931, 50934, 50947,
    50960, 50970, 50971, 50983, 51006, 51133, 51146, 51200, 51221, 51222,
    51237, 51244, 51248, 51249, 51250, 51254, 51256, 51265, 51274, 51275,
    51277, 51279, 51301, 51678, 52069, 52073, 52074, 52075, 52135, 52172,
)  # fmt: skip
LAB_NAMES = (
    "Base Excess", "Total CO2", "Lactate", "pCO2", "pH", "pO2", "ALT", "Albumin", "Alk Phos", "Anion Gap",
    "AST", "Bicarbonate", "Bilirubin", "Calcium", "Chloride", "CK", "Creatinine", "Glucose", "H", "I",
    "Magnesium", "Phosphate", "Potassium", "Sodium", "Urea Nitrogen", "Abs Lymphocytes", "Basophils",
    "Eosinophils", "Hematocrit", "Hemoglobin", "INR", "Lymphocytes", "MCH", "MCHC", "MCV", "Monocytes",
    "Neutrophils", "Platelets", "PT", "PTT", "RDW", "RBC", "WBC", "L", "Abs Basophils", "Abs Eosinophils",
    "Abs Monocytes", "Abs Neutrophils", "Immature Granulocytes", "RDW-SD",
)  # fmt: skip
# Column names of the DataFrame `pacx.data.lab_table.read_lab_table` returns: the itemids as strings.
LAB_COLUMNS = tuple(str(i) for i in LAB_ITEMIDS)
N_LABS = len(LAB_ITEMIDS)

# The file train_labs.py writes its fitted transform to, beside the DAE checkpoint; Stage 2 reads it from there.
LAB_TRANSFORM = "lab_percentiles.json"
_FORMAT = "pacx.data.labs.LabPercentiles"


def lab_index(key) -> int | None:
    """Column position of a lab given its itemid (50802 or "50802") or its METHOD.md name (any case); else None."""
    if isinstance(key, (int, np.integer)):
        return LAB_ITEMIDS.index(int(key)) if int(key) in LAB_ITEMIDS else None
    text = str(key).strip()
    if text.isdigit():
        return LAB_ITEMIDS.index(int(text)) if int(text) in LAB_ITEMIDS else None
    names = [n.lower() for n in LAB_NAMES]
    return names.index(text.lower()) if text.lower() in names else None


def describe_lab(j: int) -> str:
    return f"{LAB_ITEMIDS[j]} ({LAB_NAMES[j]})"


def _lab_matrix(table) -> np.ndarray:
    """A DataFrame with the LAB_COLUMNS, or an (N, L) array, as float64 (N, L) with NaN = missing."""
    if isinstance(table, pd.DataFrame):
        absent = [c for c in LAB_COLUMNS if c not in table.columns]
        if absent:
            raise DataError(f"lab table lacks the lab columns {absent} (expected all of pacx.data.labs.LAB_COLUMNS)")
        return table[list(LAB_COLUMNS)].to_numpy(dtype=np.float64)
    x = np.asarray(table, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != N_LABS:
        raise DataError(f"lab array must have shape (N, {N_LABS}), found {x.shape}")
    return x


def _json_float(v: float):
    # Strict JSON has no Infinity; write the two infinities as strings, which float() reads back.
    return v if np.isfinite(v) else ("inf" if v > 0 else "-inf")


class LabPercentiles:
    """Per-lab empirical CDF fitted on the training split; see the module docstring for the exact definition."""

    def __init__(self):
        self.values: list[np.ndarray] | None = None  # per lab: sorted unique training values (float64)
        self.cum_counts: list[np.ndarray] | None = None  # per lab: #training values <= values[k]
        self.mean_percentile: np.ndarray | None = None  # (L,): fill value for missing entries

    def fit(self, table) -> "LabPercentiles":
        x = _lab_matrix(table)
        self.values, self.cum_counts, means = [], [], []
        for j in range(N_LABS):
            col = x[:, j][~np.isnan(x[:, j])]
            values, counts = np.unique(col, return_counts=True)
            cum = np.cumsum(counts)
            n = len(col)
            # Mean of F over the training values: every copy of values[k] has percentile cum[k] / n.
            means.append(float((counts * cum).sum()) / n**2 if n else 0.5)
            self.values.append(values)
            self.cum_counts.append(cum)
        self.mean_percentile = np.array(means)
        return self

    def unfitted(self) -> list[int]:
        """Positions of the labs that had no training value (their percentile is undefined; see the docstring)."""
        return [j for j in range(N_LABS) if not len(self.cum_counts[j])]

    def transform(self, table) -> tuple[np.ndarray, np.ndarray]:
        """(percentiles, observed): both (N, L) float32; missing percentiles are mean-imputed, observed 1 = measured."""
        if self.values is None:
            raise DataError("LabPercentiles: call fit() or load() before transform()")
        x = _lab_matrix(table)
        observed = ~np.isnan(x)
        pct = np.empty_like(x)
        for j in range(N_LABS):
            obs = observed[:, j]
            n = int(self.cum_counts[j][-1]) if len(self.cum_counts[j]) else 0
            if n == 0 and obs.any():
                raise DataError(f"lab {describe_lab(j)} has values but the fitted training split had none")
            # searchsorted(side="right") = number of unique training values <= x; prepend 0 for "none".
            k = np.searchsorted(self.values[j], x[obs, j], side="right")
            pct[obs, j] = np.concatenate([[0], self.cum_counts[j]])[k] / max(n, 1)
            pct[~obs, j] = self.mean_percentile[j]
        return pct.astype(np.float32), observed.astype(np.float32)

    def save(self, path) -> None:
        labs = [
            {
                "itemid": LAB_ITEMIDS[j],
                "name": LAB_NAMES[j],
                "values": [_json_float(float(v)) for v in self.values[j]],
                "cum_counts": [int(c) for c in self.cum_counts[j]],
                "mean_percentile": float(self.mean_percentile[j]),
            }
            for j in range(N_LABS)
        ]
        Path(path).write_text(json.dumps({"format": _FORMAT, "labs": labs}))

    @classmethod
    def load(cls, path) -> "LabPercentiles":
        blob = json.loads(Path(path).read_text())
        if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
            raise DataError(f"{path}: not a LabPercentiles file (expected key 'format' = '{_FORMAT}')")
        itemids = [lab.get("itemid") for lab in blob["labs"]]
        if itemids != list(LAB_ITEMIDS):
            raise DataError(f"{path}: key 'labs' lists itemids {itemids}, expected {list(LAB_ITEMIDS)}")
        self = cls()
        self.values = [np.array([float(v) for v in lab["values"]], dtype=np.float64) for lab in blob["labs"]]
        self.cum_counts = [np.array(lab["cum_counts"], dtype=np.int64) for lab in blob["labs"]]
        self.mean_percentile = np.array([lab["mean_percentile"] for lab in blob["labs"]], dtype=np.float64)
        return self
