"""What tests/test_bad_input_matrix.py builds its bad inputs with: small file writers, the scripts' tiny settings,
the `Case` row, and how a case's script runs and what it leaves behind (`run_script`, `snapshot`)."""
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image

from conftest import ROOT


def make_world(root: Path) -> Path:
    """A pristine 8/4/4-patient synthetic world (images, masks, labs, WFDB, Symile arrays) with a tiny MAE and lab
    DAE checkpoint. Cases copy what they need out of it, so it is never modified."""
    from dataclasses import asdict

    import torch

    from pacx.checkpoint import save_atomic
    from pacx.models.labs_dae import LabDAE
    from pacx.models.mae import MaskedAutoencoder, mae_tiny
    from pacx.weights import lab_dae_checkpoint
    from pacx.world.files import write_world

    write_world(root, 8, 4, 4, seed=0, image_size=32, formats=("images", "segmentation", "labs", "wfdb", "npy"))
    torch.manual_seed(0)
    mae = MaskedAutoencoder(mae_tiny())
    save_atomic({"model": mae.state_dict(), "config": {"kind": "mae", **asdict(mae.mae_cfg)}}, root / "mae.pt")
    save_atomic(lab_dae_checkpoint(LabDAE()), root / "dae.pt")
    return root


# ---- small writers for the bad inputs ----

def copy(w: Path, t: Path, *names: str) -> None:
    for name in names:
        (shutil.copytree if (w / name).is_dir() else shutil.copy)(w / name, t / name)


def pngs(folder: Path, n: int = 2, shape=(40, 40)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"ok{i}.png")


def write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def edit_csv(path: Path, fn: Callable[[pd.DataFrame], pd.DataFrame], out: Path | None = None) -> None:
    fn(pd.read_csv(path, dtype=str, keep_default_na=False)).to_csv(out or path, index=False)


def set_cell(row: int, column: str, value: str):
    def fn(df):
        df.loc[row, column] = value
        return df
    return fn


def edit_npy(path: Path, fn: Callable[[np.ndarray], np.ndarray]) -> None:
    np.save(path, fn(np.load(path)))


def set_value(index, value):
    def fn(a):
        a = a.copy()
        a[index] = value
        return a
    return fn


def ecg_record(t: Path, leads: int = 12, fs: float = 500, seconds: float = 10, nan_lead: int | None = None) -> Path:
    """Point triplets.csv's first (training) row at a new WFDB record {t}/ecg/first: the first `leads` standard leads
    (ECGFounder order, mV), sampled at `fs` for `seconds`, lead `nan_lead` all NaN."""
    import wfdb

    from pacx.data.ecg_io import ECGFOUNDER_LEADS

    n = int(fs * seconds)
    sig = np.sin(np.linspace(0, 20 * np.pi, n))[:, None] * np.linspace(0.5, 1.5, leads)  # (L, leads) mV
    if nan_lead is not None:
        sig[:, nan_lead] = np.nan
    wfdb.wrsamp("first", fs=fs, units=["mV"] * leads, sig_name=list(ECGFOUNDER_LEADS[:leads]), p_signal=sig,
                fmt=["16"] * leads, adc_gain=[1000.0] * leads, baseline=[0] * leads, write_dir=str(t / "ecg"))
    edit_csv(t / "triplets.csv", set_cell(0, "ecg_path", "ecg/first"))
    return t / "ecg" / "first"


def previous_run(out: Path, *names: str) -> None:
    """A folder holding another run's files (their bytes must survive the refusal)."""
    for name in names:
        write(out / name, f"previous run's {name}\n")


# ---- the scripts' tiny settings ({t} is the case's tmp_path) ----

MAE = ["--model", "tiny", "--img_size", "32", "--workers", "0", "--device", "cpu", "--epochs", "1", "--max_steps",
       "1", "--batch_size", "2", "--out_dir", "{t}/out"]
LABS = ["--workers", "0", "--device", "cpu", "--epochs", "1", "--max_steps", "1",
        "--batch_size", "4", "--out_dir", "{t}/out"]
DISTILL = ["--model", "tiny", "--img_size", "32", "--labs_dae", "{t}/dae.pt", "--targets_cache", "{t}/targets",
           "--workers", "0", "--device", "cpu", "--epochs", "1", "--max_steps", "1", "--batch_size", "8",
           "--out_dir", "{t}/out"]
SYMILE = [*DISTILL, "--data", "{t}/data_npy", "--use_ecg", "false"]
TRIPLETS = [*DISTILL, "--data", "{t}/triplets.csv", "--labs_table", "{t}/labs.csv"]
EVAL = ["--backbones", "a=", "--model", "tiny", "--img_size", "32", "--workers", "0", "--device", "cpu",
        "--probe_epochs", "1", "--bootstrap", "10", "--batch_size", "4", "--fractions", "1.0", "--seg_epochs", "1",
        "--out_dir", "{t}/out"]
TASK = [*EVAL, "--task_csv", "{t}/images.csv", "--image_column", "path", "--label_columns", "fluid_overload",
        "--task_type", "binary"]


def symile(t: Path, w: Path) -> Path:
    copy(w, t, "data_npy", "dae.pt")
    return t / "data_npy" / "train"


def triplets(t: Path, w: Path, **record) -> Path:
    """The world's raw triplets; with `record` options, the first row's ECG replaced (see `ecg_record`)."""
    copy(w, t, "images", "ecg", "triplets.csv", "labs.csv", "dae.pt")
    return ecg_record(t, **record) if record else t / "ecg"


def task(t: Path, w: Path) -> None:
    copy(w, t, "images", "images.csv")


@dataclass
class Case:
    id: str
    script: str  # module whose main(argv) reads the input: a script (train_mae, ...) or pacx.data.make_cache
    build: Callable[[Path, Path], object]  # (tmp_path, world): write the bad input into tmp_path
    argv: list[str]
    expect: str  # what the error line must contain ({t}: tmp_path), at least the offending file, line or key
    subprocess: bool = False
    xfail: str = ""  # a known defect outside the reader modules: the reason, and the case must fail (strict)


def image_csv_with_missing_file(t, w):
    pngs(t / "data")
    write(t / "list.csv", "Path\ndata/ok0.png\ndata/ok1.png\ndata/gone.png\n")


def truncated_jpeg(t, w):
    pngs(t / "data")
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)).save(t / "a.jpg")
    write(t / "data" / "cut.jpg", (t / "a.jpg").read_bytes()[:400])


def cache(t: Path) -> None:
    """{t}/images/ok0-2.png and their cache {t}/cache."""
    from pacx.data.cache import build_cache

    pngs(t / "images", 3)
    build_cache(sorted((t / "images").glob("*.png")), t / "cache", size=16, log=None)


def stale_cache(t, w):
    cache(t)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(t / "images" / "ok0.png")  # changed after the build


def truncated_cache_array(t, w):
    cache(t)
    with open(t / "cache" / "images.npy", "r+b") as f:
        f.truncate(500)


def seg_mask_wrong_size(t, w):
    copy(w, t, "images", "masks", "segmentation.csv")
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(t / "masks" / "small.png")
    edit_csv(t / "segmentation.csv", set_cell(1, "mask_path", "masks/small.png"))  # row 1 is a training row


def align_features(t, w, rows: int, nan_row: int | None = None):
    task(t, w)
    ecg = np.random.default_rng(0).normal(size=(rows, 8))
    if nan_row is not None:
        ecg[nan_row, 3] = np.nan
    np.savez(t / "align.npz", ecg=ecg)


def truncated_dat(t, w):
    dat = triplets(t, w, fs=500).with_suffix(".dat")
    write(dat, dat.read_bytes()[:1000])


def rate_zero(t, w):
    """The record line of a WFDB header is `name n_sig fs sig_len`: set its fs to 0."""
    header = triplets(t, w, fs=500).with_suffix(".hea")
    lines = header.read_text().splitlines()
    fields = lines[0].split()
    fields[2] = "0"
    header.write_text("\n".join([" ".join(fields)] + lines[1:]) + "\n")


def corrupt_npy(t, w):
    write(symile(t, w) / "labs_percentiles_train.npy", b"\x93NUMPY garbage")


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_script(script: str, argv: list[str], capsys, in_subprocess: bool) -> tuple[int, str]:
    """(exit status, stderr) of `script` run with `argv`, in this process or through the command line."""
    if in_subprocess:
        cmd = [sys.executable, "-m", script] if "." in script else [sys.executable, str(ROOT / f"{script}.py")]
        res = subprocess.run(cmd + argv, cwd=ROOT, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        return res.returncode, res.stderr
    capsys.readouterr()
    try:
        importlib.import_module(script).main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def check_case(case: Case, world: Path, tmp_path: Path, capsys) -> None:
    """What every bad input must give: exit status 2, one `error: ` line holding `case.expect`, no traceback, and
    every file that was in tmp_path before the run unchanged after it."""
    case.build(tmp_path, world)
    before = snapshot(tmp_path)
    capsys.readouterr()
    code, err = run_script(case.script, [a.format(t=tmp_path) for a in case.argv], capsys, case.subprocess)
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert case.expect.format(t=tmp_path) in lines[0], lines[0]
    after = snapshot(tmp_path)
    changed = [p for p, digest in before.items() if after.get(p) != digest]
    assert not changed, f"files changed or deleted: {changed}"
