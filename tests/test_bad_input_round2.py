"""The bad-input matrix, round 2 (issue 14): inputs from a hostile trial that lost files, gave silent wrong results
or tracebacks. Same rules as tests/test_bad_input_matrix.py: exit status 2, one `error: ` line naming the file / key,
no traceback, and every file that was in tmp_path before the run has the same bytes after it (nothing of the user's
is deleted, overwritten or mixed, even with --overwrite, when the new run's inputs turn out bad)."""
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bad_inputs import (
    check_case,
    LABS, MAE, SYMILE, TASK, TRIPLETS, Case, copy, edit_csv, edit_npy, make_world, pngs, previous_run,
    set_cell, symile, task, triplets, write,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("world"))


def finished(script: str, argv: list[str]):
    """A builder: a finished tiny run of `script` (in-process) whose folder the case then resumes or replaces."""
    def build(t, w):
        pngs(t / "data", 4)
        pngs(t / "data2", 4)
        copy(w, t, "data_npy")
        import importlib

        importlib.import_module(script).main([a.format(t=t) for a in argv])
    return build


class Payload:
    def __reduce__(self):
        import os

        return (os.system, ("true",))


def saved(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)


def vit_with_config(t: Path, **extra) -> None:
    from pacx.models.vit import VisionTransformer, vit_tiny

    cfg = vit_tiny(img_size=32)
    saved(t / "enc.pt", {"model": VisionTransformer(cfg).state_dict(), "config": {"kind": "vit", **asdict(cfg),
                                                                                  **extra}})


def duplicate_header(path: Path, column: str) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0] + f",{column}"] + [line + ",0" for line in lines[1:]]) + "\n")


def nan_tiff(t, w):
    pngs(t / "data")
    arr = np.ones((40, 40), np.float32)
    arr[3, 4] = np.nan
    Image.fromarray(arr, mode="F").save(t / "data" / "nan.tif")


def chexpert_layout(t, w):
    """CheXpert's release: CheXpert-v1.0/train.csv names 'CheXpert-v1.0/train/...' (paths from the folder above)."""
    pngs(t / "CheXpert-v1.0" / "train" / "patient1", 2)
    write(t / "CheXpert-v1.0" / "train.csv", "Path\nCheXpert-v1.0/train/patient1/ok0.png\n"
                                             "CheXpert-v1.0/train/patient1/ok1.png\n")


MAE_RUN = [*MAE, "--data", "{t}/data", "--batch_size", "2", "--max_steps", "1"]
CASES = [
    # data lost or mixed ----
    Case("evaluate --overwrite with a typo in the label column", "evaluate",
         lambda t, w: (task(t, w), previous_run(t / "out", "results.json", "results.md", "finetune/a_1.pt",
                                                "rollout/000.png")),
         [*TASK, "--overwrite", "--label_columns", "fluid_overlaod"],
         "{t}/images.csv: missing column 'fluid_overlaod'"),
    Case("make_world into a folder holding the user's files", "pacx.world.make",
         lambda t, w: write(t / "mine" / "images.csv", "path,label\nmy.png,1\n"),
         ["--out_dir", "{t}/mine", "--n_train", "4", "--n_val", "2", "--n_test", "2", "--image_size", "32"],
         "{t}/mine: not an empty folder (holds images.csv)"),
    # silent wrong results ----
    Case("resume with another --batch_size", "train_mae", finished("train_mae", MAE_RUN),
         [*MAE_RUN, "--batch_size", "4", "--resume"],
         "{t}/out/last.pt: this run was started with --batch_size 2, this command gives --batch_size 4"),
    Case("resume with other --data", "train_mae", finished("train_mae", MAE_RUN),
         [*MAE_RUN, "--data", "{t}/data2", "--resume"], "this run was started with --data {t}/data, this command "
                                                       "gives --data {t}/data2"),
    Case("resume with another --epochs", "train_mae", finished("train_mae", MAE_RUN),
         [*MAE_RUN, "--epochs", "9", "--resume"], "--epochs 1, this command gives --epochs 9"),
    Case("resume with another --model", "train_mae", finished("train_mae", [*MAE_RUN, "--mask_ratio", "0.5"]),
         [*MAE_RUN, "--mask_ratio", "0.5", "--model", "small", "--resume"],
         "--model tiny, this command gives --model small"),
    Case("resume a lab DAE folder with the MAE script", "train_mae",
         finished("train_labs", [*LABS, "--data", "{t}/data_npy"]), [*MAE_RUN, "--resume"],
         "{t}/out/last.pt: holds a run of another model (lab_dae, this script trains mae)"),
    Case("--mask_ratio above 1", "train_mae", lambda t, w: pngs(t / "data"), [*MAE_RUN, "--mask_ratio", "1.5"],
         "--mask_ratio: expected a fraction in (0, 1), got 1.5"),
    Case("--mask_ratio 0", "train_mae", lambda t, w: pngs(t / "data"), [*MAE_RUN, "--mask_ratio", "0"],
         "--mask_ratio: expected a fraction in (0, 1), got 0.0"),
    Case("--mask_ratio that keeps no patch", "train_mae", lambda t, w: pngs(t / "data"),
         [*MAE_RUN, "--mask_ratio", "0.99"], "--mask_ratio 0.99: keeps 0 of 16 patches"),
    Case("Symile pixels stored as uint8", "train_distill",
         lambda t, w: edit_npy(symile(t, w) / "cxr_train.npy", lambda a: np.zeros(a.shape, np.uint8)),
         SYMILE, "{t}/data_npy/train/cxr_train.npy: expected floating-point ImageNet-normalised pixels, found dtype "
                 "uint8"),
    Case("float TIFF with a NaN pixel", "train_mae", nan_tiff, [*MAE_RUN, "--data", "{t}/data"],
         "{t}/data/nan.tif: pixel (row 3, column 4) is nan"),
    Case("label column named twice in the header", "evaluate",
         lambda t, w: (task(t, w), duplicate_header(t / "images.csv", "fluid_overload")), TASK,
         "{t}/images.csv: column 'fluid_overload' appears 2 times in the header"),
    Case("lab column named twice in the header", "train_labs",
         lambda t, w: (copy(w, t, "labs.csv"), duplicate_header(t / "labs.csv", "50813")),
         [*LABS, "--data", "{t}/labs.csv"], "{t}/labs.csv: column '50813' appears 2 times in the header"),
    Case("--epochs 0", "train_mae", lambda t, w: pngs(t / "data"), [*MAE_RUN, "--epochs", "0"],
         "--epochs: expected >= 1, got 0"),
    Case("evaluate --probe_epochs 0", "evaluate", task, [*TASK, "--probe_epochs", "0"],
         "--probe_epochs / --finetune_epochs / --ckpt_every: expected >= 1 / >= 1 / >= 0, got 0 / 40 / 0"),
    Case("--lr 0", "train_labs", lambda t, w: copy(w, t, "data_npy"), [*LABS, "--data", "{t}/data_npy", "--lr", "0"],
         "--lr: expected a number > 0, got 0.0"),
    # one line instead of a traceback ----
    Case("--labs_dae missing", "train_distill", lambda t, w: symile(t, w), [*SYMILE, "--labs_dae", "{t}/no.pt"],
         "{t}/no.pt: checkpoint not found"),
    Case("--labs_dae is a folder", "train_distill", lambda t, w: (symile(t, w), (t / "dir").mkdir()),
         [*SYMILE, "--labs_dae", "{t}/dir"], "{t}/dir: checkpoint not found (a folder)"),
    Case("--labs_dae is garbage", "train_distill", lambda t, w: (symile(t, w), write(t / "bad.pt", b"garbage")),
         [*SYMILE, "--labs_dae", "{t}/bad.pt"], "{t}/bad.pt: not a loadable checkpoint"),
    Case("--labs_dae carries a code payload", "train_distill",
         lambda t, w: (symile(t, w), saved(t / "evil.pt", {"model": {}, "x": Payload()})),
         [*SYMILE, "--labs_dae", "{t}/evil.pt"], "{t}/evil.pt: not a loadable checkpoint: it holds Python objects "
                                                 "beyond tensors and plain containers (posix.system); refused"),
    Case("--ecg_weights missing", "train_distill", lambda t, w: symile(t, w),
         [*SYMILE, "--use_ecg", "true", "--ecg_weights", "{t}/ecg.pth"], "{t}/ecg.pth: checkpoint not found"),
    Case("backbone checkpoint that is a bare tensor", "evaluate",
         lambda t, w: (task(t, w), saved(t / "enc.pt", torch.zeros(3))), [*TASK, "--backbones", "a={t}/enc.pt"],
         "{t}/enc.pt: not a pacx checkpoint: expected a dict of tensors and settings, found Tensor"),
    Case("backbone checkpoint from a newer pacx (unknown config field)", "evaluate",
         lambda t, w: (task(t, w), vit_with_config(t, fancy_new_option=1)), [*TASK, "--backbones", "a={t}/enc.pt"],
         "{t}/enc.pt: its config has field(s) ['fancy_new_option'] that this pacx's ViTConfig does not know"),
    Case("--out_dir is a file", "train_mae", lambda t, w: (pngs(t / "data"), write(t / "out", "a file")), MAE_RUN,
         "{t}/out: exists and is not a folder"),
    Case("--out_dir where nothing may be written", "train_mae", lambda t, w: pngs(t / "data"),
         [*MAE_RUN, "--out_dir", "/proc/pacx_out"], "/proc/pacx_out"),
    Case("negative --lr", "train_mae", lambda t, w: pngs(t / "data"), [*MAE_RUN, "--lr", "-1"],
         "--lr: expected a number > 0, got -1.0"),
    Case("NaN --lr", "train_distill", lambda t, w: symile(t, w), [*SYMILE, "--lr", "nan"],
         "--lr: expected a number > 0, got nan"),
    Case("--batch_size 0", "train_mae", lambda t, w: pngs(t / "data"), [*MAE_RUN, "--batch_size", "0"],
         "--batch_size: expected >= 1, got 0"),
    Case("--img_size not a multiple of the patch", "train_mae", lambda t, w: pngs(t / "data"),
         [*MAE_RUN, "--img_size", "30"], "--img_size: expected a positive multiple of the patch size 8, got 30"),
    Case("evaluate --img_size not a multiple of the patch", "evaluate", task, [*TASK, "--img_size", "30"],
         "--img_size: expected a positive multiple of the patch size 8, got 30"),
    # clearer messages ----
    Case("CheXpert CSV read from its own folder", "train_mae", chexpert_layout,
         [*MAE_RUN, "--data", "{t}/CheXpert-v1.0/train.csv"], "pass --image_root {t}"),
    Case("a path with a quoted newline", "train_mae",
         lambda t, w: (pngs(t / "data"), write(t / "list.csv", 'Path\ndata/ok0.png\n"data/ok\n1.png"\n')),
         [*MAE_RUN, "--data", "{t}/list.csv"], "first on line 3: {t}/data/ok\\n1.png"),
    Case("Symile admission id NaN", "train_distill",
         lambda t, w: edit_npy(symile(t, w) / "hadm_id_train.npy", lambda a: np.where(np.arange(len(a)) == 2, np.nan,
                                                                                       a.astype(float))),
         SYMILE, "{t}/data_npy/train/hadm_id_train.npy: row 2: expected an integer admission id, found nan"),
    Case("triplet row without an admission id", "train_distill",
         lambda t, w: (triplets(t, w), edit_csv(t / "triplets.csv", set_cell(3, "hadm_id", ""))),
         [*TRIPLETS, "--use_ecg", "false"], "{t}/triplets.csv: line 5, column 'hadm_id': expected an admission id"),
    Case("WFDB record with NaN samples", "train_distill",
         lambda t, w: edit_npy_wfdb_nan(t, w), TRIPLETS, "expected finite samples (repair the record or leave it out)"),
]


def edit_npy_wfdb_nan(t, w):
    """The first triplet's record with three NaN samples in lead II (not a whole lead)."""
    import wfdb

    from pacx.data.ecg_io import ECGFOUNDER_LEADS

    triplets(t, w)
    sig = np.sin(np.linspace(0, 20 * np.pi, 5000))[:, None] * np.ones(12)
    sig[100:103, 1] = np.nan
    wfdb.wrsamp("first", fs=500, units=["mV"] * 12, sig_name=list(ECGFOUNDER_LEADS), p_signal=sig, fmt=["16"] * 12,
                adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(t / "ecg"))
    edit_csv(t / "triplets.csv", set_cell(0, "ecg_path", "ecg/first"))


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_bad_input_is_one_line_and_harms_nothing(case, world, tmp_path, capsys):
    check_case(case, world, tmp_path, capsys)
