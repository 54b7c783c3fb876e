"""train_labs.py (the lab DAE, Stage 1b) end to end on CPU: learning, kill-and-resume, 1 vs 2 processes with
accumulation, --help."""
import dataclasses

import numpy as np

from conftest import assert_same_training, kill_and_resume, run_script, torchrun_script, why


def run(args, **kw):
    return run_script("train_labs.py", args, **kw)


def write_symile_labs(folder, n=64):
    rng = np.random.default_rng(0)
    split = folder / "data_npy" / "train"
    split.mkdir(parents=True)
    z = rng.normal(size=(n, 3))
    x = 1 / (1 + np.exp(-(z @ rng.normal(size=(3, 50)))))  # percentiles driven by 3 factors
    m = (rng.random((n, 50)) < 0.7).astype(np.float32)
    np.save(split / "labs_percentiles_train.npy", x.astype(np.float32))
    np.save(split / "labs_missingness_train.npy", m)
    return folder / "data_npy"


def test_trains_from_symile_arrays(tmp_path):
    write_symile_labs(tmp_path)
    res = run(["--data", str(tmp_path / "data_npy"), "--workers", "0", "--batch_size", "16", "--epochs", "10",
               "--warmup_steps", "4", "--log_every", "4", "--out_dir", str(tmp_path / "dae")])
    assert res.returncode == 0, res.stderr
    losses = [float(line.split("loss ")[1].split(" ")[0]) for line in res.stdout.splitlines() if "loss " in line]
    assert losses[-1] < 0.7 * losses[0], losses


def test_killed_and_resumed_run_is_bit_identical(tmp_path):
    """The lab DAE (its corruption drawn per sample) killed after step 13 of 24 (mid-epoch) resumes to the same
    weights."""
    data = write_symile_labs(tmp_path)
    kill_and_resume("train_labs.py", ["--data", str(data), "--workers", "0", "--batch_size", "8", "--epochs", "3",
                                      "--warmup_steps", "4", "--ckpt_every", "1", "--log_every", "1"], tmp_path,
                    total_steps=24, kill_after=13)


def test_two_processes_with_accumulation_equal_one_process(tmp_path):
    """The DAE's loss is a mean over observed entries, whose count varies per sample: 2 ranks x 2 micro-batches of a
    global batch of 16 match 1 process x 16 only because every part divides by the global batch's count (a per-rank
    mean, the reference's DDP behaviour, would not: its logged losses differ by percents)."""
    import torch

    from pacx.models.labs_dae import LabDAE

    data = write_symile_labs(tmp_path)
    common = ["--data", str(data), "--workers", "0", "--batch_size", "16", "--max_steps", "3", "--epochs", "1",
              "--warmup_steps", "1", "--log_every", "1"]
    one = run([*common, "--out_dir", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    two = torchrun_script("train_labs.py", [*common, "--accum_steps", "2", "--out_dir", str(tmp_path / "two")])
    assert two.returncode == 0, why(two)
    torch.manual_seed(0)
    assert_same_training(tmp_path / "one", tmp_path / "two", LabDAE().state_dict(), lr=3e-4)


def test_help_lists_every_option():
    import train_labs

    res = run(["--help"])
    assert res.returncode == 0
    for f in dataclasses.fields(train_labs.Config):
        assert f"--{f.name}" in res.stdout


def test_reference_schedule():
    """The defaults give the reference schedule (`LabsDAELightning`): on Symile-MIMIC's 10,000 training rows at batch
    256 (39 steps an epoch, the last partial batch dropped), 200 linear warmup steps to 3e-4, then a cosine to 0 at
    step 1,950, stepped every step. Checked against the formula written out here, through `pacx.training.Run.lr_at`
    (the function every script's schedule goes through)."""
    import math

    import train_labs
    from pacx.training import Run

    cfg = train_labs.Config()
    run = Run.__new__(Run)  # only the schedule: no run folder
    run.cfg, run.steps_per_epoch = cfg, 10_000 // cfg.batch_size
    run.warmup = cfg.warmup_steps / run.steps_per_epoch
    total = cfg.epochs * run.steps_per_epoch
    assert (run.steps_per_epoch, total) == (39, 1950)
    for step in (0, 1, 100, 199, 200, 201, 1000, 1949):
        want = 3e-4 * (step / 200 if step < 200 else 0.5 * (1 + math.cos(math.pi * (step - 200) / (total - 200))))
        assert abs(run.lr_at(step / run.steps_per_epoch) - want) < 1e-12, step
