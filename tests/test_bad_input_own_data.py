"""The bad-input matrix for bringing your own data (issue 16): lab-table mappings and units, 8-lead rules, options
that name what to change. Same rules as tests/test_bad_input_matrix.py: exit status 2, one `error: ` line naming the
file / line / column / option, no traceback, and every file in tmp_path before the run has the same bytes after it."""
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from bad_inputs import (
    check_case,
    LABS, MAE, SYMILE, TASK, TRIPLETS, Case, copy, edit_csv, make_world, pngs, symile, task,
    triplets, write,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("world"))


def lymphocyte_counts(path: Path, out: Path | None = None) -> None:
    """Absolute lymphocyte counts (K/uL, as a real export holds them) in the column of 51244, the % lab."""
    def fn(df):
        counts = ["0.6", "1.1", "0.9", "1.4", "2.2", "0.4", "1.0", "1.8"]
        df["51244"] = counts * (len(df) // 8) + ["1.2"] * (len(df) % 8)
        return df
    edit_csv(path, fn, out)


def two_sizes(t: Path, w: Path) -> None:
    from pacx.models.vit import VisionTransformer, vit_tiny

    task(t, w)
    for name, cfg in (("a", vit_tiny(img_size=32)), ("b", vit_tiny(img_size=32, depth=2))):
        torch.save({"model": VisionTransformer(cfg).state_dict(), "config": {"kind": "vit", **asdict(cfg)}},
                   t / f"{name}.pt")


CASES = [
    # train_labs.py: the lab table ----
    Case("--lab_columns names a column the table lacks", "train_labs", lambda t, w: copy(w, t, "labs.csv"),
         [*LABS, "--data", "{t}/labs.csv", "--lab_columns", "crea=50912"],
         "{t}/labs.csv: column 'crea' given in the lab mapping (--lab_columns / --lab_map) is not in the file"),
    Case("--lab_columns pair without '='", "train_labs", lambda t, w: copy(w, t, "labs.csv"),
         [*LABS, "--data", "{t}/labs.csv", "--lab_columns", "crea"],
         "--lab_columns: expected COLUMN=LAB pairs such as crea=50912, got 'crea'"),
    Case("--lab_map row naming no lab", "train_labs",
         lambda t, w: (copy(w, t, "labs.csv"), write(t / "map.csv", "column,itemid\n50912,troponin\n")),
         [*LABS, "--data", "{t}/labs.csv", "--lab_map", "{t}/map.csv"],
         "{t}/map.csv: line 2: column '50912' is mapped to 'troponin', which is not one of the 50 labs"),
    Case("--lab_map file missing", "train_labs", lambda t, w: copy(w, t, "labs.csv"),
         [*LABS, "--data", "{t}/labs.csv", "--lab_map", "{t}/map.csv"], "{t}/map.csv: no such file"),
    Case("lab table with no lab column", "train_labs", lambda t, w: write(t / "mine.csv", "id,crp\n1,5\n2,7\n"),
         [*LABS, "--data", "{t}/mine.csv"], "{t}/mine.csv: no column is one of the 50 labs"),
    Case("lymphocyte counts in the % lab's column", "train_labs",
         lambda t, w: lymphocyte_counts(w / "labs.csv", t / "labs.csv"), [*LABS, "--data", "{t}/labs.csv"],
         "{t}/labs.csv: column '51244' is read as lab 51244 (Lymphocytes, %) but holds absolute counts (median 1.05, "
         "below 8.9); 51133 (Abs Lymphocytes) is the same cells in K/uL"),
    Case("--lab_columns with Symile arrays", "train_labs", lambda t, w: copy(w, t, "data_npy"),
         [*LABS, "--data", "{t}/data_npy", "--lab_columns", "a=50912"],
         "{t}/data_npy: a Symile-MIMIC folder has its 50 labs in order; --lab_id_column, --lab_columns and --lab_map "
         "apply to a lab table (CSV)"),
    Case("--lab_id_column not in the table", "train_labs", lambda t, w: copy(w, t, "labs.csv"),
         [*LABS, "--data", "{t}/labs.csv", "--lab_id_column", "patient"],
         "{t}/labs.csv: id column 'patient' not found"),
    # train_distill.py: the same rule for --labs_table; ECGs named by their CSV line ----
    Case("--labs_table: lymphocyte counts in the % lab's column", "train_distill",
         lambda t, w: (triplets(t, w), lymphocyte_counts(t / "labs.csv")), [*TRIPLETS, "--use_ecg", "false"],
         "{t}/labs.csv: column '51244' is read as lab 51244 (Lymphocytes, %) but holds absolute counts"),
    Case("--labs_table with Symile arrays", "train_distill", lambda t, w: (symile(t, w), copy(w, t, "labs.csv")),
         [*SYMILE, "--labs_table", "{t}/labs.csv"],
         "{t}/data_npy: a Symile-MIMIC folder holds its lab percentiles; --labs_table, --lab_columns and --lab_map go "
         "with a triplet CSV"),
    Case("7-lead ECG, named by its triplet line", "train_distill", lambda t, w: triplets(t, w, leads=7), TRIPLETS,
         "{t}/triplets.csv: line 2, column 'ecg_path': {t}/ecg/first: record lacks standard leads ['V2', 'V3', 'V4', "
         "'V5', 'V6']"),
    # options that name what to change ----
    Case("--batch_size larger than the images", "train_mae", lambda t, w: pngs(t / "data", 2),
         [*MAE, "--data", "{t}/data", "--batch_size", "8"],
         "--batch_size 8 is larger than the data set (2 samples): no full batch to train on; pass --batch_size 2 or "
         "less"),
    Case("random= beside backbones of two sizes", "evaluate", two_sizes,
         [*TASK, "--backbones", "r=,a={t}/a.pt,b={t}/b.pt"],
         "--backbones: a random-init backbone (empty path) takes the architecture of the others, but they differ (a: "
         "32 px, patch 8, width 64, depth 4, 4 heads; b: 32 px, patch 8, width 64, depth 2, 4 heads)"),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_bad_input_is_one_line_and_harms_nothing(case, world, tmp_path, capsys):
    check_case(case, world, tmp_path, capsys)
