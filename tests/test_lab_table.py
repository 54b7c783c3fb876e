"""Tests for pacx/data/lab_table.py: a user's lab table read into the 50 lab columns (by itemid, name or mapping), the
unit checks against hand computations, the one-line notes, and the real MHH COVID-19 table."""
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import percentileofscore

from pacx.data.lab_table import UNIT_BOUNDARY, lab_mapping, read_lab_table
from pacx.data.labs import LAB_COLUMNS, LAB_ITEMIDS, LAB_NAMES, LabPercentiles, lab_index
from pacx.errors import PacxError

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
MHH_LABS = SAMPLES / "labs" / "mhh_covid19_image_repository_data.csv"


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    return path


def quiet(table, **kw):
    """read_lab_table with its notes collected: (DataFrame, [lines])."""
    lines = []
    return read_lab_table(table, log=lines.append, **kw), lines


def test_read_lab_table_by_itemid_and_name(tmp_path):
    # Shuffled columns, names in any case, an id column, inf strings and several spellings of "missing".
    order = list(range(50))[::-1]
    header = ["hadm_id"] + [LAB_NAMES[j].upper() if j % 2 else LAB_COLUMNS[j] for j in order]
    row1 = ["7"] + [str(j + 0.5) for j in order]
    row2 = ["8"] + ["inf", "-inf", "", "NA", " nan ", "1e3"] + ["2"] * 44
    rows = [row1, row2]
    units = {51244: "30", 51256: "30", 51133: "2", 52075: "2"}  # % of the white cells, and counts in K/uL
    for itemid, value in units.items():
        for row in rows:
            k = 1 + order.index(LAB_ITEMIDS.index(itemid))
            row[k] = value if row[k] not in ("inf", "-inf", "", "NA", " nan ") else row[k]
    df, lines = quiet(write_csv(tmp_path / "t.csv", header, rows), id_column="hadm_id")
    assert lines == []  # every lab has its column, every column is a lab or the id
    assert list(df.columns) == ["hadm_id", *LAB_COLUMNS]
    assert list(df["hadm_id"]) == ["7", "8"]
    expected = np.arange(50) + 0.5
    for itemid, value in units.items():
        expected[LAB_ITEMIDS.index(itemid)] = float(value)
    np.testing.assert_array_equal(df[list(LAB_COLUMNS)].iloc[0].to_numpy(), expected)
    second = df[[LAB_COLUMNS[j] for j in order[:6]]].iloc[1].to_numpy()
    np.testing.assert_array_equal(second, [np.inf, -np.inf, np.nan, np.nan, np.nan, 1000.0])


def test_any_subset_of_labs_under_own_names_with_one_line_per_note(tmp_path):
    """8 labs under the user's names, an id column and two columns of something else: the 42 labs without a column
    are all-NaN and named in one line, the two other columns in another; the id column in neither."""
    names = {"crea": 50912, "hb": 51222, "na": 50983, "k": 50971, "wbc": 51301, "plt": 51265, "lact": 50813,
             "gluc": 50931}
    rng = np.random.default_rng(0)
    values = rng.uniform(1, 5, size=(6, 8)).round(2)
    values[2, 3] = np.nan
    rows = [[f"p{i}", "x", "y"] + ["" if np.isnan(v) else str(v) for v in values[i]] for i in range(6)]
    path = write_csv(tmp_path / "mine.csv", ["patient", "ward", "comment", *names], rows)
    df, lines = quiet(path, id_column="patient", columns=names)
    assert len(lines) == 2
    absent = sorted(set(LAB_ITEMIDS) - set(names.values()))
    assert lines[0].startswith(f"{path}: 42 of the 50 labs have no column and count as never measured: ")
    listed = [int(part.split(" ")[0]) for part in lines[0].split("measured: ")[1].split(", ")]
    assert listed == absent
    assert lines[1] == f"{path}: 2 column(s) not used (none is one of the 50 labs; map one with --lab_columns " \
                       "COLUMN=ITEMID): ward, comment"
    for k, (column, itemid) in enumerate(names.items()):
        np.testing.assert_array_equal(df[str(itemid)].to_numpy(), values[:, k])
    assert df[[str(i) for i in absent]].isna().all().all()


def test_errors_name_the_problem(tmp_path):
    header = list(LAB_COLUMNS)
    good = ["1"] * 50
    good[LAB_ITEMIDS.index(51244)] = good[LAB_ITEMIDS.index(51256)] = "30"  # percentages of the white cells
    bad = [good, good[:3] + ["1.2.5"] + good[4:]]
    with pytest.raises(ValueError, match=r"line 3 \(data row 2\), column '50818'.*'1.2.5'"):
        quiet(write_csv(tmp_path / "c.csv", header, bad))
    with pytest.raises(ValueError, match=r"e.csv: not a readable CSV table.*line 3"):
        quiet(write_csv(tmp_path / "e.csv", header, [good, good + ["1"]]))
    with pytest.raises(ValueError, match=r"'50802' and 'base excess' both give lab 50802"):
        quiet(write_csv(tmp_path / "d.csv", [*header, "base excess"], [good + ["1"]]))
    a = write_csv(tmp_path / "a.csv", ["hadm_id", *header], [["1", *good]])
    with pytest.raises(ValueError, match=r"id column 'sid' not found"):
        quiet(a, id_column="sid")
    with pytest.raises(ValueError, match=r"maps 'hadm_id' to 'Troponin'"):
        quiet(a, columns={"hadm_id": "Troponin"})
    with pytest.raises(ValueError, match=r"column 'crea' given in the lab mapping .* is not in the file"):
        quiet(a, columns={"crea": 50912})
    with pytest.raises(ValueError, match=r"column 'hadm_id' given in the lab mapping .* is the id column"):
        quiet(a, id_column="hadm_id", columns={"hadm_id": 50912})
    with pytest.raises(ValueError, match=r"f.csv: no column is one of the 50 labs .* --lab_columns"):
        quiet(write_csv(tmp_path / "f.csv", ["id", "crp"], [["1", "5"]]))


def test_lab_mapping_from_the_option_and_a_file(tmp_path):
    (tmp_path / "map.csv").write_text("column,itemid\nHb (g/dl),51222\nsodium, Sodium\n")
    got = lab_mapping(("crea=50912", "a=b=Glucose"), str(tmp_path / "map.csv"))
    assert got == {"crea": 50912, "a=b": 50931, "Hb (g/dl)": 51222, "sodium": 50983}
    with pytest.raises(PacxError, match=r"--lab_columns: expected COLUMN=LAB pairs .* got 'crea'"):
        lab_mapping(("crea",))
    with pytest.raises(PacxError, match=r"--lab_columns: column 'x' is mapped to '99999', which is not one of"):
        lab_mapping(("x=99999",))
    with pytest.raises(PacxError, match=r"map.csv: line 2: column 'Hb \(g/dl\)' is mapped twice \(also in "
                                        r"--lab_columns\)"):
        lab_mapping(("Hb (g/dl)=51222",), str(tmp_path / "map.csv"))
    (tmp_path / "bad.csv").write_text("name,lab\nx,1\n")
    with pytest.raises(PacxError, match=r"bad.csv: missing column 'column'"):
        lab_mapping((), str(tmp_path / "bad.csv"))


def test_unit_checks_follow_the_mimic_units(tmp_path):
    """Lymphocytes 51244 / neutrophils 51256 are % of the white cells, 51133 / 52075 the same cells in K/uL. The
    boundary between the two is the geometric mean of the upper count and lower percent reference limits."""
    assert UNIT_BOUNDARY[51244] == pytest.approx(math.sqrt(4.0 * 20.0)) == pytest.approx(8.944, abs=1e-3)
    assert UNIT_BOUNDARY[51256] == pytest.approx(math.sqrt(7.5 * 40.0)) == pytest.approx(17.32, abs=1e-2)

    def table(name, values):
        return write_csv(tmp_path / f"{name}.csv", ["id", name], [[str(i), v] for i, v in enumerate(values)])

    counts = ["0.4", "0.9", "1.2", "1.6", "2.9", "inf", ""]  # absolute lymphocytes, K/uL (median 1.2)
    with pytest.raises(ValueError, match=r"lymphocytes.csv: column 'lymphocytes' is read as lab 51244 \(Lymphocytes, "
                                         r"%\) but holds absolute counts \(median 1.2, below 8.9\); 51133 \(Abs "
                                         r"Lymphocytes\) is the same cells in K/uL"):
        quiet(table("lymphocytes", counts), id_column="id")  # matched by its name
    df, _ = quiet(table("lymphocytes", counts), id_column="id", columns={"lymphocytes": 51133})
    assert df["51133"].iloc[2] == 1.2
    with pytest.raises(ValueError, match=r"column 'neut' is read as lab 52075 \(Abs Neutrophils, K/uL\) but holds "
                                         r"percentages \(median 71, above 17.3\); 51256 \(Neutrophils\) is the same "
                                         r"cells in %"):
        quiet(table("neut", ["60", "65", "71", "80", "85"]), id_column="id", columns={"neut": 52075})
    with pytest.raises(ValueError, match=r"column 'eos' is read as lab 51200 \(Eosinophils, %\) but holds values "
                                         r"above 100 \(up to 350\), which no percentage can be; 52073"):
        quiet(table("eos", ["120", "350", "0"]), id_column="id", columns={"eos": 51200})
    # Either side of the boundary, by hand: median 9.0 > 8.944 is a percentage, 8.9 < 8.944 a count; a median of
    # fewer than 5 values decides nothing.
    quiet(table("l1", ["5", "6", "9.0", "30", "31"]), id_column="id", columns={"l1": 51244})
    with pytest.raises(ValueError, match="holds absolute counts"):
        quiet(table("l2", ["5", "6", "8.9", "30", "31"]), id_column="id", columns={"l2": 51244})
    quiet(table("l3", ["5", "6", "8.9", "30"]), id_column="id", columns={"l3": 51244})
    # Small fractions overlap in the two units: only the 0-100 check applies, both readings pass.
    for lab in (51200, 52073):
        quiet(table(f"e{lab}", ["0.1", "0.3", "2.0"]), id_column="id", columns={f"e{lab}": lab})


def test_real_mhh_lab_table_through_explicit_mapping():
    """The MHH COVID-19 table is real and messy: interval-binned values, -inf/inf, empty cells, redacted columns; its
    lymphocytes and neutrophils are absolute counts (10^9/L)."""
    if not MHH_LABS.exists():
        pytest.skip(f"{MHH_LABS} not present")
    with pytest.raises(ValueError, match=r"column 'lymphocytes_val' is read as lab 51244 .* 51133 \(Abs "
                                         r"Lymphocytes\)"):
        quiet(MHH_LABS, id_column="image_id", columns={"lymphocytes_val": "Lymphocytes"})
    # Absolute counts (10^9/L) and blood gases in mmHg: the MIMIC labs with the same meaning and unit.
    mapping = {"lymphocytes_val": 51133, "neutrophils_val": "abs neutrophils", "pco2_val": "pCO2", "po2_val": 50821}
    df, lines = quiet(MHH_LABS, id_column="image_id", columns=mapping)
    assert len(lines) == 2 and lines[0].split(": ")[1].startswith("46 of the 50 labs have no column")
    unused = lines[1].split("COLUMN=ITEMID): ")[1].split(", ")
    raw = pd.read_csv(MHH_LABS)  # pandas' own number parsing, as an independent reading
    assert unused == [c for c in raw.columns if c not in mapping and c != "image_id"]
    assert {"crp_val", "d-dimer_val", "factor_xii_val", "ldh_val"} <= set(unused)
    assert len(df) == len(raw) == 243
    for src, lab in mapping.items():
        col = LAB_COLUMNS[lab_index(lab)]
        np.testing.assert_array_equal(df[col].to_numpy(), raw[src].to_numpy())
    assert np.isinf(df[[LAB_COLUMNS[lab_index(v)] for v in mapping.values()]].to_numpy()).any()

    # Fit on the first half of the patients, transform everything.
    patients = raw["patient_id"].unique()
    in_train = raw["patient_id"].isin(patients[: len(patients) // 2]).to_numpy()
    lp = LabPercentiles().fit(df[in_train])
    pct, mask = lp.transform(df)
    assert np.all((pct >= 0) & (pct <= 1))
    for src, lab in mapping.items():
        j = lab_index(lab)
        value, train = df[LAB_COLUMNS[j]].to_numpy(), df[LAB_COLUMNS[j]].to_numpy()[in_train]
        np.testing.assert_array_equal(mask[:, j], raw[src].notna().to_numpy())
        obs = ~np.isnan(value)
        order = np.argsort(value[obs], kind="stable")
        assert np.all(np.diff(pct[obs, j][order]) >= 0)  # monotone in the raw value
        for i in np.flatnonzero(obs):
            weak = percentileofscore(train[~np.isnan(train)], value[i], kind="weak") / 100
            assert pct[i, j] == pytest.approx(weak, abs=1e-6)
        if np.isposinf(value).any():
            assert np.all(pct[np.isposinf(value), j] == 1.0)
    po2 = df["50821"].to_numpy()
    assert np.isneginf(po2).any()  # -inf (below the detection limit): the lowest observed percentile
    assert pct[np.isneginf(po2), 5].max() <= pct[np.isfinite(po2), 5].min()
    assert np.all(pct[:, lab_index("Glucose")] == 0.5) and np.all(mask[:, lab_index("Glucose")] == 0)
