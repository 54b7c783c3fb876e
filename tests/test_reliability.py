"""Reliability round 2 (issue 14), the cases that need more than one bad input: an --overwrite that meets a bad file
late, two runs on one folder, a rewritten ECG record under a warm target cache, resuming with an allowed change, a log
cut mid-line, a full disk during a checkpoint write, the bf16 autocast path of every training script on the CPU, and a
two-node torchrun launch."""
import errno
import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from bad_inputs import make_world, pngs
from conftest import ROOT, assert_same_training, run_script, why
from pacx.checkpoint import LAST, load

pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM")
TINY = ["--model", "tiny", "--img_size", "32", "--workers", "0", "--device", "cpu", "--log_every", "1",
        "--warmup_epochs", "0"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"))


def test_overwrite_meeting_a_bad_image_late_leaves_no_mix_of_two_runs(tmp_path):
    """--overwrite replaces a run only once the new inputs are read; a file that turns out unreadable at batch time
    then stops the new run, and the folder holds the new run's files only: its checkpoint cannot be mistaken for the
    old run's (whose last.pt would otherwise be resumed under the new config)."""
    pngs(tmp_path / "a", 4)
    out = tmp_path / "out"
    first = run_script("train_mae.py", [*TINY, "--data", str(tmp_path / "a"), "--batch_size", "2", "--epochs", "2",
                                        "--out_dir", str(out)])
    assert first.returncode == 0, why(first)
    pngs(tmp_path / "b", 4)
    (tmp_path / "b" / "ok3.png").write_bytes(b"not a png")  # exists, so it passes the up-front checks
    second = run_script("train_mae.py", [*TINY, "--data", str(tmp_path / "b"), "--batch_size", "4", "--epochs",
                                         "2", "--overwrite", "--out_dir", str(out)])
    assert second.returncode == 2 and "ok3.png: not a readable image" in second.stderr
    assert not (out / LAST).exists()  # the old run's checkpoint went with it; none of the new run's yet
    assert json.loads((out / "config.json").read_text())["script"]["data"] == str(tmp_path / "b")
    assert (out / "metrics.jsonl").read_text() == ""
    resumed = run_script("train_mae.py", [*TINY, "--data", str(tmp_path / "b"), "--batch_size", "4", "--epochs",
                                          "2", "--resume", "--out_dir", str(out)])
    assert resumed.returncode == 2 and "nothing to resume from" in resumed.stderr


def test_a_second_run_on_a_busy_folder_is_refused_and_a_killed_one_does_not_block(tmp_path):
    pngs(tmp_path / "data", 8)
    args = [str(ROOT / "train_mae.py"), *TINY, "--data", str(tmp_path / "data"), "--batch_size", "2", "--epochs",
            "200", "--out_dir", str(tmp_path / "out")]
    first = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True)
    try:
        assert "MAE:" in first.stdout.readline() + first.stdout.readline()  # past the folder checks: it holds the lock
        second = subprocess.run([sys.executable, *args, "--resume"], cwd=ROOT, capture_output=True, text=True)
        assert second.returncode == 2 and "another run is writing in this folder" in second.stderr, second.stderr
        first.kill()  # SIGKILL: no clean-up code runs, the kernel drops the lock
        first.wait()
        third = subprocess.run([sys.executable, *args, "--overwrite", "--epochs", "1"], cwd=ROOT,
                               capture_output=True, text=True)
        assert third.returncode == 0, why(third)
    finally:
        first.kill()
        first.wait()


def test_rewritten_ecg_record_is_encoded_again(world, tmp_path):
    """The raw-triplet target cache is keyed by every WFDB file (size, mtime): a record rewritten after the first run
    is encoded again instead of being answered from the cache."""
    import shutil

    for name in ("images", "ecg", "triplets.csv", "labs.csv", "dae.pt"):
        (shutil.copytree if (world / name).is_dir() else shutil.copy)(world / name, tmp_path / name)
    args = [*TINY, "--data", str(tmp_path / "triplets.csv"), "--labs_table", str(tmp_path / "labs.csv"),
            "--labs_dae", str(tmp_path / "dae.pt"), "--targets_cache", str(tmp_path / "cache"), "--batch_size", "4",
            "--max_steps", "1", "--val_split", ""]
    first = run_script("train_distill.py", [*args, "--out_dir", str(tmp_path / "a")])
    assert first.returncode == 0 and "targets: reading" in first.stdout, why(first)
    again = run_script("train_distill.py", [*args, "--out_dir", str(tmp_path / "b")])
    assert "targets: reusing" in again.stdout
    first_record = (tmp_path / "triplets.csv").read_text().splitlines()[1].split(",")[3]  # a training row's record
    record = tmp_path / f"{first_record}.dat"
    time.sleep(0.01)
    record.write_bytes(record.read_bytes()[::-1][:len(record.read_bytes())])  # same size, other bytes
    third = run_script("train_distill.py", [*args, "--out_dir", str(tmp_path / "c")])
    assert "targets: reading" in third.stdout and "reusing" not in third.stdout, third.stdout


def test_resume_with_an_allowed_change_and_a_log_cut_mid_line(tmp_path):
    """--allow_changes epochs lets a run be extended; a metrics.jsonl whose last line a kill cut short is repaired on
    resume (the cut line dropped, the steps after the checkpoint written again)."""
    pngs(tmp_path / "data", 4)
    common = [*TINY, "--data", str(tmp_path / "data"), "--batch_size", "2", "--out_dir", str(tmp_path / "out")]
    assert run_script("train_mae.py", [*common, "--epochs", "1"]).returncode == 0
    log = tmp_path / "out" / "metrics.jsonl"
    log.write_text(log.read_text() + '{"step": 3, "loss": 0.')  # a record a kill cut short
    refused = run_script("train_mae.py", [*common, "--epochs", "2", "--resume"])
    assert refused.returncode == 2 and "--allow_changes epochs" in refused.stderr
    resumed = run_script("train_mae.py", [*common, "--epochs", "2", "--resume", "--allow_changes", "epochs"])
    assert resumed.returncode == 0, why(resumed)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4]
    assert load(tmp_path / "out" / LAST)["step"] == 4


def test_full_disk_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    """A write that fails half-way (ENOSPC) ends the run with one line; the temp file is gone and the previous
    checkpoint still loads."""
    import train_mae
    from pacx import checkpoint

    pngs(tmp_path / "data", 4)
    common = [*TINY, "--data", str(tmp_path / "data"), "--batch_size", "2", "--epochs", "2", "--out_dir",
              str(tmp_path / "out")]
    real_save, calls = torch.save, []

    def save_until_full(obj, f):
        calls.append(1)
        if len(calls) > 1:  # the first checkpoint is written; the disk fills up during the second
            f.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f)

    monkeypatch.setattr(checkpoint.torch, "save", save_until_full)
    with pytest.raises(SystemExit) as e:
        train_mae.main(common)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("last.pt: could not be written (No space left on device); the previous "
                                             "file, if any, is intact"), err
    assert not (tmp_path / "out" / f"{LAST}.tmp").exists()
    assert load(tmp_path / "out" / LAST)["step"] == 2


@pytest.mark.parametrize("script", ["train_mae.py", "train_labs.py", "train_distill.py"])
def test_bf16_autocast_path_on_the_cpu(world, tmp_path, script):
    """--amp bf16 runs the mixed-precision path CUDA takes, on the CPU: the run trains, and its first loss differs
    from fp32's by bf16 rounding only (8 mantissa bits: relative 2e-2 after a forward pass) and not at all by
    nothing (a silently ignored flag would give the fp32 loss exactly)."""
    data = {"train_mae.py": ["--data", str(world / "images"), *TINY, "--batch_size", "4"],
            "train_labs.py": ["--data", str(world / "data_npy"), "--workers", "0", "--device", "cpu",
                              "--batch_size", "4", "--log_every", "1"],
            "train_distill.py": ["--data", str(world / "data_npy"), *TINY, "--labs_dae", str(world / "dae.pt"),
                                 "--init", str(world / "mae.pt"), "--targets_cache", str(tmp_path / "cache"),
                                 "--use_ecg", "false", "--batch_size", "4", "--val_split", "",
                                 "--lora_dropout", "0", "--head_dropout", "0"]}[script]
    losses = []
    for amp in ("off", "bf16"):
        res = run_script(script, [*data, "--max_steps", "2", "--amp", amp, "--out_dir", str(tmp_path / amp)])
        assert res.returncode == 0, why(res)
        first = json.loads((tmp_path / amp / "metrics.jsonl").read_text().splitlines()[0])
        losses.append(first.get("loss", first.get("total")))
    assert 0 < abs(losses[1] - losses[0]) <= 2e-2 * abs(losses[0]), losses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_localhost_equal_one_process(tmp_path):
    """torchrun as multi-node users launch it: two "nodes" (one process each) meeting through a c10d rendezvous on
    localhost; the run equals one process on the same global batch."""
    from pacx.models.mae import MaskedAutoencoder
    from pacx.weights import mae_config

    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(tmp_path / "data" / f"{i}.png")
    common = [*TINY, "--data", str(tmp_path / "data"), "--batch_size", "4", "--max_steps", "3", "--epochs", "2"]
    one = run_script("train_mae.py", [*common, "--out_dir", str(tmp_path / "one")])
    assert one.returncode == 0, why(one)
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend",
         "c10d", "--rdzv_endpoint", endpoint, "--rdzv_id", "pacx-test", str(ROOT / "train_mae.py"), *common,
         "--out_dir", str(tmp_path / "two")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"}) for _ in range(2)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), [err[-2000:] for _, err in outputs]
    assert sum("2 process(es)" in out for out, _ in outputs) == 1  # one rank 0 across the two nodes
    torch.manual_seed(0)
    assert_same_training(tmp_path / "one", tmp_path / "two", MaskedAutoencoder(mae_config("tiny", 32)).state_dict(),
                         lr=1.5e-4)
