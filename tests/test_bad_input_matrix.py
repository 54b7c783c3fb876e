"""The bad-input matrix (issue 8): every bad input a user can hand a script, one row each.

Each case writes its bad input into a fresh tmp_path (usually a copy of a tiny synthetic world, then broken), runs the
script that reads it, and checks what issue 3 and issue 8 ask of every bad input: exit status 2, one line on stderr
that starts with `error: ` and names the offending file / line / key, no traceback, and every file that was in
tmp_path before the run still there with the same bytes (a fresh output folder may appear). Scripts run in-process
through their `main(argv)` for speed; the cases marked `subprocess` go through the real command line.
A second, short table records inputs that look odd but are valid (16-bit PNGs, images of any size): they run.
"""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bad_inputs import (
    check_case,
    Case, EVAL, LABS, MAE, SYMILE, TASK, TRIPLETS, align_features, corrupt_npy,
    image_csv_with_missing_file, rate_zero, seg_mask_wrong_size, stale_cache, truncated_cache_array,
    truncated_dat, truncated_jpeg, cache, copy, edit_csv, edit_npy, pngs, previous_run, run_script,
    set_cell, set_value, snapshot, symile, task, triplets, write, make_world,
)
from test_images import write_dicom
from pacx.data.images import read_gray

# The frozen ECG encoder is random in these tests (no ECGFounder file): its loud warning is expected.
pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("world"))


CASES = [
    # train_mae.py, images (folder, CSV) ----
    Case("missing data path", "train_mae", lambda t, w: None, [*MAE, "--data", "{t}/nowhere"],
         "{t}/nowhere: no such file or folder"),
    Case("image file missing from the CSV", "train_mae", image_csv_with_missing_file, [*MAE, "--data", "{t}/list.csv"],
         "{t}/list.csv: 1 of 3 files in column 'Path' do not exist; first on line 4: {t}/data/gone.png",
         subprocess=True),
    Case("corrupt PNG", "train_mae",
         lambda t, w: (pngs(t / "data"), write(t / "data" / "bad.png", b"\x89PNG\r\n\x1a\n not an image")),
         [*MAE, "--data", "{t}/data"], "{t}/data/bad.png: not a readable image"),
    Case("truncated JPEG", "train_mae", truncated_jpeg, [*MAE, "--data", "{t}/data"],
         "{t}/data/cut.jpg: not a readable image"),
    Case("not a DICOM file named .dcm", "train_mae",
         lambda t, w: (pngs(t / "data"), write(t / "data" / "scan.dcm", b"plain text, not DICOM\n" * 10)),
         [*MAE, "--data", "{t}/data"], "{t}/data/scan.dcm: not a DICOM file"),
    Case("DICOM without pixel data", "train_mae",
         lambda t, w: (pngs(t / "data"),
                       write_dicom(t / "data" / "nopix.dcm", np.ones((8, 8), np.uint16), 16, PixelData=None)),
         [*MAE, "--data", "{t}/data"], "{t}/data/nopix.dcm: DICOM file has no PixelData"),
    Case("DICOM with truncated pixel data", "train_mae",
         lambda t, w: (pngs(t / "data"),
                       write_dicom(t / "data" / "short.dcm", np.ones((8, 8), np.uint16), 16, PixelData=b"\0" * 10)),
         [*MAE, "--data", "{t}/data"], "{t}/data/short.dcm: cannot decode DICOM pixels"),
    Case("CSV without the image column", "train_mae",
         lambda t, w: (pngs(t / "data"), write(t / "list.csv", "file\ndata/ok0.png\n")),
         [*MAE, "--data", "{t}/list.csv"], "{t}/list.csv: missing column 'Path' (found columns: file)"),
    Case("empty CSV (zero bytes)", "train_mae", lambda t, w: write(t / "list.csv", b""),
         [*MAE, "--data", "{t}/list.csv"], "{t}/list.csv: not a readable CSV table"),
    Case("header-only CSV", "train_mae", lambda t, w: write(t / "list.csv", "Path\n"),
         [*MAE, "--data", "{t}/list.csv"], "{t}/list.csv: no data rows"),
    Case("blank image cell", "train_mae",
         lambda t, w: (pngs(t / "data"), write(t / "list.csv", 'Path\ndata/ok0.png\n""\n')),
         [*MAE, "--data", "{t}/list.csv"], "{t}/list.csv: line 3, column 'Path': expected a file path"),
    Case("folder without images", "train_mae", lambda t, w: write(t / "data" / "notes.txt", "no images here\n"),
         [*MAE, "--data", "{t}/data"], "{t}/data: no image files"),
    Case("data neither a folder nor a CSV", "train_mae", lambda t, w: write(t / "list.txt", "a.png\n"),
         [*MAE, "--data", "{t}/list.txt"], "{t}/list.txt: expected a folder of images or a .csv"),
    Case("output folder holding another run", "train_mae",
         lambda t, w: (pngs(t / "data"), previous_run(t / "out", "last.pt", "metrics.jsonl", "config.json")),
         [*MAE, "--data", "{t}/data"], "{t}/out: holds a previous run (last.pt); pass --resume"),
    Case("output folder holding a run killed before its first checkpoint", "train_mae",
         lambda t, w: (pngs(t / "data"), previous_run(t / "out", "metrics.jsonl", "config.json")),
         [*MAE, "--data", "{t}/data"], "{t}/out: holds a previous run"),
    # python -m pacx.data.make_cache and caches used by train_mae.py ----
    Case("cache rebuild meets a corrupt image (the old cache is kept)", "pacx.data.make_cache",
         lambda t, w: (cache(t), write(t / "images" / "zz_bad.png", b"\x89PNG\r\n\x1a\n and no image after it")),
         ["--data", "{t}/images", "--out", "{t}/cache", "--size", "16", "--workers", "0"],
         "{t}/images/zz_bad.png: not a readable image", subprocess=True),
    Case("cache --out is a folder of the user's", "pacx.data.make_cache",
         lambda t, w: (pngs(t / "images"), write(t / "mine" / "notes.txt", "keep me\n")),
         ["--data", "{t}/images", "--out", "{t}/mine", "--size", "16", "--workers", "0"],
         "{t}/mine: exists and is not a pacx image cache"),
    Case("cache whose source image changed", "train_mae", stale_cache, [*MAE, "--data", "{t}/cache"],
         "{t}/images/ok0.png: changed since the cache was built"),
    Case("cache with a truncated array", "train_mae", truncated_cache_array, [*MAE, "--data", "{t}/cache"],
         "{t}/cache/images.npy: not a readable .npy array"),
    # train_labs.py ----
    Case("labs table missing", "train_labs", lambda t, w: None, [*LABS, "--data", "{t}/labs.csv"],
         "{t}/labs.csv: no such file"),
    Case("lab value that is not a number", "train_labs",
         lambda t, w: edit_csv(w / "labs.csv", set_cell(3, "50813", "high"), t / "labs.csv"),
         [*LABS, "--data", "{t}/labs.csv"], "{t}/labs.csv: line 5 (data row 4), column '50813': expected a number"),
    Case("labs table whose columns name no lab", "train_labs",
         lambda t, w: edit_csv(w / "labs.csv", lambda df: df.add_prefix("lab_"), t / "labs.csv"),
         [*LABS, "--data", "{t}/labs.csv"], "{t}/labs.csv: no column is one of the 50 labs"),
    Case("empty labs table (zero bytes)", "train_labs", lambda t, w: write(t / "labs.csv", b""),
         [*LABS, "--data", "{t}/labs.csv"], "{t}/labs.csv: not a readable CSV table"),
    Case("header-only labs table", "train_labs",
         lambda t, w: write(t / "labs.csv", (w / "labs.csv").read_text().splitlines()[0] + "\n"),
         [*LABS, "--data", "{t}/labs.csv"], "{t}/labs.csv: no data rows"),
    Case("NaN lab percentile", "train_labs",
         lambda t, w: edit_npy(symile(t, w) / "labs_percentiles_train.npy", set_value((2, 3), np.nan)),
         [*LABS, "--data", "{t}/data_npy"], "{t}/data_npy/train/labs_percentiles_train.npy: lab percentile at row 2, "
                                            "column 3 is nan"),
    Case("lab percentile out of [0, 1]", "train_labs",
         lambda t, w: edit_npy(symile(t, w) / "labs_percentiles_train.npy", set_value((5, 0), 1.5)),
         [*LABS, "--data", "{t}/data_npy"], "labs_percentiles_train.npy: lab percentile at row 5, column 0 is 1.5"),
    Case("observed mask not 0/1", "train_labs",
         lambda t, w: edit_npy(symile(t, w) / "labs_missingness_train.npy", set_value((1, 1), 2)),
         [*LABS, "--data", "{t}/data_npy"], "{t}/data_npy/train/labs_missingness_train.npy: the observed mask must"),
    Case("corrupt .npy file", "train_labs", corrupt_npy, [*LABS, "--data", "{t}/data_npy"],
         "{t}/data_npy/train/labs_percentiles_train.npy: not a readable .npy array"),
    # train_distill.py on Symile-MIMIC arrays ----
    Case("Symile array lengths disagree", "train_distill",
         lambda t, w: np.save(symile(t, w) / "hadm_id_train.npy", np.arange(7)),
         SYMILE, "{t}/data_npy/train/hadm_id_train.npy: has 7 rows, but cxr_train.npy has 8"),
    Case("Symile ECG array of the wrong shape", "train_distill",
         lambda t, w: edit_npy(symile(t, w) / "ecg_train.npy", lambda a: a[..., :11]),
         SYMILE, "{t}/data_npy/train/ecg_train.npy: expected shape (N, 1, L, 12), found (8, 1, 5000, 11)"),
    Case("Symile duplicate hadm_id", "train_distill",
         lambda t, w: np.save(symile(t, w) / "hadm_id_train.npy", np.array([5, 6, 7, 8, 9, 6, 10, 11])),
         SYMILE, "{t}/data_npy/train/hadm_id_train.npy: row 5: hadm_id 6 repeats row 1"),
    Case("Symile array missing", "train_distill",
         lambda t, w: (symile(t, w) / "labs_missingness_train.npy").unlink(),
         SYMILE, "{t}/data_npy/train/labs_missingness_train.npy: no such file"),
    Case("Symile NaN lab percentile", "train_distill",
         lambda t, w: edit_npy(symile(t, w) / "labs_percentiles_train.npy", set_value((2, 3), np.nan)),
         SYMILE, "{t}/data_npy/train/labs_percentiles_train.npy: row 2, lab 3: expected a percentile in [0, 1]"),
    Case("Symile inf pixel", "train_distill",
         lambda t, w: edit_npy(symile(t, w) / "cxr_train.npy", set_value((6, 0, 5, 5), np.inf)),
         SYMILE, "{t}/data_npy/train/cxr_train.npy: row 6: expected finite values"),
    Case("Symile NaN ECG sample", "train_distill",
         lambda t, w: edit_npy(symile(t, w) / "ecg_train.npy", set_value((4, 0, 100, 2), np.nan)),
         [*SYMILE, "--use_ecg", "true"], "{t}/data_npy/train/ecg_train.npy: row 4: expected finite ECG samples"),
    Case("output folder holding another distillation run", "train_distill",
         lambda t, w: (symile(t, w), previous_run(t / "out", "last.pt", "encoder.pt", "metrics.jsonl")),
         SYMILE, "{t}/out: holds a previous run (last.pt); pass --resume"),
    # train_distill.py on raw triplets: CSV + WFDB records + labs table ----
    Case("triplet CSV without the ECG column", "train_distill",
         lambda t, w: (triplets(t, w), edit_csv(t / "triplets.csv", lambda df: df.drop(columns=["ecg_path"]))),
         TRIPLETS, "{t}/triplets.csv: missing column 'ecg_path'"),
    Case("triplet CSV naming an admission twice", "train_distill",
         lambda t, w: (triplets(t, w), edit_csv(t / "triplets.csv", lambda df: df.assign(
             hadm_id=df["hadm_id"].where(df.index != 3, df["hadm_id"][1])))),
         [*TRIPLETS, "--use_ecg", "false"], "{t}/triplets.csv: line 5, column 'hadm_id': expected one row per "
                                            "admission"),
    Case("labs table with a duplicate id", "train_distill",
         lambda t, w: (triplets(t, w), edit_csv(t / "labs.csv", lambda df: pd.concat([df, df.iloc[[2]]]))),
         [*TRIPLETS, "--use_ecg", "false"], "{t}/labs.csv: line 18, column 'hadm_id': expected unique ids"),
    Case("labs table without a triplet's admission", "train_distill",
         lambda t, w: (triplets(t, w), edit_csv(t / "labs.csv", lambda df: df.iloc[1:])),
         [*TRIPLETS, "--use_ecg", "false"], "{t}/labs.csv: no row with hadm_id = "),
    Case("labs table with a string value", "train_distill",
         lambda t, w: (triplets(t, w), edit_csv(t / "labs.csv", set_cell(2, "50912", "hemolysed"))),
         [*TRIPLETS, "--use_ecg", "false"], "{t}/labs.csv: line 4 (data row 3), column '50912'"),
    Case("WFDB record missing a lead", "train_distill", lambda t, w: triplets(t, w, leads=11), TRIPLETS,
         "{t}/ecg/first: record lacks standard leads ['V6']"),
    Case("WFDB lead entirely NaN", "train_distill", lambda t, w: triplets(t, w, nan_lead=4), TRIPLETS,
         "{t}/ecg/first: leads ['aVL'] are entirely NaN"),
    Case("WFDB record whose header is gone", "train_distill",
         lambda t, w: triplets(t, w, fs=500).with_suffix(".hea").unlink(), TRIPLETS,
         "{t}/ecg/first.hea does not exist"),
    Case("WFDB signal file shorter than its header says", "train_distill", truncated_dat, TRIPLETS,
         "{t}/ecg/first: wfdb could not read the record"),
    Case("ECG sampled too slowly to resample (50 Hz)", "train_distill", lambda t, w: triplets(t, w, fs=50),
         TRIPLETS, "{t}/ecg/first: expected a sampling rate above 80 Hz (ECGFounder filters to 0.67-40 Hz), found "
                   "50 Hz"),
    Case("ECG header with sampling rate 0", "train_distill", rate_zero, TRIPLETS,
         "{t}/ecg/first: expected a sampling rate above 80 Hz (ECGFounder filters to 0.67-40 Hz), found 0 Hz"),
    Case("ECG shorter than 5 s at its own rate", "train_distill", lambda t, w: triplets(t, w, fs=1000, seconds=2),
         TRIPLETS, "{t}/ecg/first: record is 2.00 s long, expected at least 5.0 s"),
    # evaluate.py ----
    Case("binary label 'yes'", "evaluate", lambda t, w: (task(t, w), edit_csv(t / "images.csv",
         set_cell(2, "fluid_overload", "yes"))), TASK,
         "{t}/images.csv: line 4, column 'fluid_overload': expected 0 or 1, found 'yes'"),
    Case("NaN label", "evaluate", lambda t, w: (task(t, w), edit_csv(t / "images.csv",
         set_cell(2, "fluid_overload", "nan"))), TASK, "{t}/images.csv: line 4, column 'fluid_overload'"),
    Case("multilabel value 2", "evaluate", lambda t, w: (task(t, w), edit_csv(t / "images.csv",
         set_cell(6, "effusion", "2"))), [*TASK, "--label_columns", "fluid_overload,effusion", "--task_type",
                                          "multilabel"],
         "{t}/images.csv: line 8, column 'effusion': expected 0 or 1, found '2'"),
    Case("multiclass label 'maybe'", "evaluate", lambda t, w: (task(t, w), edit_csv(t / "images.csv",
         set_cell(2, "fluid_overload", "maybe"))), [*TASK, "--task_type", "multiclass"],
         "{t}/images.csv: line 4, column 'fluid_overload': expected an integer class id"),
    Case("multiclass label 'inf'", "evaluate", lambda t, w: (task(t, w), edit_csv(t / "images.csv",
         set_cell(2, "fluid_overload", "inf"))), [*TASK, "--task_type", "multiclass"],
         "{t}/images.csv: line 4, column 'fluid_overload': expected an integer class id"),
    Case("label column missing", "evaluate", task, [*TASK, "--label_columns", "no_such_label"],
         "{t}/images.csv: missing column 'no_such_label'"),
    Case("unknown split name", "evaluate", lambda t, w: (task(t, w), edit_csv(t / "images.csv",
         set_cell(9, "split", "training"))), TASK,
         "{t}/images.csv: line 11, column 'split': expected train, val or test, found 'training'"),
    Case("task image missing", "evaluate", lambda t, w: (task(t, w), (t / "images" / pd.read_csv(
         t / "images.csv")["path"][10].split("/")[1]).unlink()), TASK, "{t}/images.csv: 1 of 16 files in column "
                                                                     "'path' do not exist; first on line 12"),
    Case("segmentation mask of another size than its image", "evaluate", seg_mask_wrong_size,
         [*EVAL, "--seg_csv", "{t}/segmentation.csv"], "{t}/masks/small.png: mask is (20, 24) but image {t}/images/"),
    Case("alignment targets with NaN", "evaluate", lambda t, w: align_features(t, w, 16, nan_row=9),
         [*TASK, "--align_features", "{t}/align.npz"], "{t}/align.npz: 'ecg' has a non-finite value in row 9"),
    Case("alignment targets with too few rows", "evaluate", lambda t, w: align_features(t, w, 12),
         [*TASK, "--align_features", "{t}/align.npz"], "{t}/align.npz: 'ecg' must be (rows, features) with at least "
                                                       "16 rows"),
    Case("backbone checkpoint that is not one", "evaluate",
         lambda t, w: (task(t, w), write(t / "enc.pt", b"PK\x03\x04 truncated zip")),
         [*TASK, "--backbones", "a={t}/enc.pt"], "{t}/enc.pt: not a loadable checkpoint"),
    Case("output folder holding another evaluation", "evaluate",
         lambda t, w: (task(t, w), previous_run(t / "out", "results.json", "results.md")), TASK,
         "{t}/out: holds a previous evaluation"),
    # visualize.py ----
    Case("recon over a corrupt image", "visualize",
         lambda t, w: (copy(w, t, "mae.pt"), pngs(t / "data"), write(t / "data" / "bad.png", b"junk")),
         ["--what", "recon", "--mae", "{t}/mae.pt", "--images", "{t}/data", "--device", "cpu", "--out_dir",
          "{t}/fig"], "{t}/data/bad.png: not a readable image"),
    Case("rollout checkpoint missing", "visualize", lambda t, w: pngs(t / "data"),
         ["--what", "rollout", "--pacx", "{t}/encoder.pt", "--images", "{t}/data", "--device", "cpu", "--out_dir",
          "{t}/fig"], "{t}/encoder.pt: checkpoint not found"),
    Case("training log cut off mid-line", "visualize",
         lambda t, w: write(t / "run" / "metrics.jsonl", '{"step": 1, "loss": 0.5}\n{"step": 2, "lo'),
         ["--what", "curves", "--logs", "{t}/run", "--out_dir", "{t}/fig"],
         "{t}/run/metrics.jsonl: not a JSON-lines log"),
    Case("results file that is not JSON", "visualize", lambda t, w: write(t / "results.json", '{"config": '),
         ["--what", "lowlabel", "--results", "{t}/results.json", "--out_dir", "{t}/fig"],
         "{t}/results.json: not valid JSON"),
]




@pytest.mark.parametrize("case", [
    pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else []) for c in CASES])
def test_bad_input_is_one_line_and_harms_nothing(case, world, tmp_path, capsys):
    check_case(case, world, tmp_path, capsys)


# ---- odd but valid inputs: the matrix records that they are accepted ----

def test_16_bit_png_is_read_at_full_depth_and_trains(tmp_path, capsys):
    """A ramp of 256 consecutive 16-bit values (1000..1255) read at full depth stays 256 gray levels, each the
    min-max formula of pacx.data.images; an 8-bit read would merge them (keeping the high byte leaves 2 levels, Pillow's
    convert("L") clips every value to 255)."""
    ramp = (1000 + np.arange(256, dtype=np.uint16))[None].repeat(40, 0)  # (40, 256)
    (tmp_path / "data").mkdir()
    for i in range(2):
        Image.fromarray(ramp + 100 * i).save(tmp_path / "data" / f"{i}.png")
    assert Image.open(tmp_path / "data" / "0.png").mode.startswith("I;16")
    gray = read_gray(tmp_path / "data" / "0.png")
    lo, hi = float(ramp.min()), float(ramp.max())
    expected = np.rint((ramp - lo) / (hi - lo) * 255).astype(np.uint8)
    np.testing.assert_array_equal(gray, expected)
    assert len(np.unique(gray)) == 256
    before = snapshot(tmp_path)
    code, err = run_script("train_mae", [a.format(t=tmp_path) for a in [*MAE, "--data", "{t}/data"]], capsys, False)
    assert code == 0, err
    assert (tmp_path / "out" / "last.pt").is_file()
    assert all(snapshot(tmp_path)[p] == d for p, d in before.items())


def test_images_of_any_size_and_aspect_are_resized_and_train(tmp_path, capsys):
    """Not an error: the MAE augmentation (a random resized crop) takes any size to --img_size. A segmentation mask
    must still match its image's size (see the matrix)."""
    (tmp_path / "data").mkdir()
    for name, shape in (("wide", (20, 90)), ("strip", (300, 3))):  # one batch of 2: both are read
        Image.fromarray(np.full(shape, 120, np.uint8)).save(tmp_path / "data" / f"{name}.png")
    before = snapshot(tmp_path)
    code, err = run_script("train_mae", [a.format(t=tmp_path) for a in [*MAE, "--data", "{t}/data"]], capsys, False)
    assert code == 0, err
    assert (tmp_path / "out" / "last.pt").is_file()
    assert all(snapshot(tmp_path)[p] == d for p, d in before.items())
