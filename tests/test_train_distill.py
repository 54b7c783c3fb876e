"""train_distill.py end to end on a tiny synthetic world: 1 vs 2 processes, kill-and-resume, target cache, export."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, SLOW_SAVES, kill_after_checkpoint, why
from pacx.checkpoint import LAST, load
from pacx.world.files import write_world
from pacx.models.vit import ViTConfig, VisionTransformer

SCRIPT = str(ROOT / "train_distill.py")
timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def ready(tmp_path_factory):
    """A 32/8-sample synthetic world in the Symile-MIMIC layout, tiny Stage-1 checkpoints in pacx's layout (a fresh
    tiny MAE and lab DAE), and one short run that fills the target cache."""
    from dataclasses import asdict

    from pacx.checkpoint import save_atomic
    from pacx.models.labs_dae import LabDAE
    from pacx.weights import lab_dae_checkpoint
    from pacx.models.mae import MaskedAutoencoder, mae_tiny

    root = tmp_path_factory.mktemp("world")
    write_world(root, 32, 8, 8, seed=0, image_size=64, formats=("npy",))
    torch.manual_seed(0)
    mae = MaskedAutoencoder(mae_tiny())
    save_atomic({"model": mae.state_dict(), "config": {"kind": "mae", **asdict(mae.mae_cfg)}}, root / "mae.pt")
    save_atomic(lab_dae_checkpoint(LabDAE()), root / "dae.pt")
    first = run(["--batch_size", "8", "--max_steps", "1", "--epochs", "1"], root, root / "warm")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "encoding 32 train samples" in first.stdout and "RANDOM" in first.stderr  # no ECGFounder file given
    return root


def run(args, world_root, out, extra_env=None, torchrun=False, popen=False, timeout=None):
    common = ["--data", str(world_root / "data_npy"), "--init", str(world_root / "mae.pt"), "--labs_dae",
              str(world_root / "dae.pt"), "--targets_cache", str(world_root / "targets"), "--workers", "0",
              "--log_every", "1", "--warmup_epochs", "1", "--out_dir", str(out)]
    cmd = [sys.executable, SCRIPT] if not torchrun else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", SCRIPT]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(extra_env or {})}
    if popen:
        return subprocess.Popen(cmd + common + args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    return subprocess.run(cmd + common + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_target_cache_is_reused_and_keyed_by_weights(ready):
    again = run(["--batch_size", "8", "--max_steps", "1", "--epochs", "1"], ready, ready / "again")
    assert again.returncode == 0 and "reusing" in again.stdout and "encoding" not in again.stdout
    cached = sorted((ready / "targets").glob("targets_train_*.pt"))
    assert len(cached) == 1
    targets = load(cached[0])
    assert targets["ecg"].shape == (32, 1024) and targets["labs"].shape == (32, 256)


def test_two_processes_equal_one_process(ready, tmp_path):
    """Two gloo ranks (global-batch InfoNCE negatives, averaged gradients) against one process on the same batches.

    What is compared is what rounding cannot amplify. The loss of every step, to rtol 1e-4: step 1 sees the same
    weights (reduction order is the only difference), later steps weights that differ only where Adam turned
    rounding noise into a step, i.e. on elements whose gradient is near 0, which moves the loss at second order.
    The weights: every element within Adam's bound of lr per step (3 steps, lr 1e-4: a change of rule would move
    most elements by that much), and the median element to rounding (1e-6)."""
    steps, lr = 3, 1e-4
    args = ["--batch_size", "8", "--max_steps", str(steps), "--epochs", "1", "--lora_dropout", "0",
            "--head_dropout", "0", "--val_split", "", "--lr", str(lr)]
    one = run(args, ready, tmp_path / "one")
    assert one.returncode == 0, one.stderr[-2000:]
    two = run(args, ready, tmp_path / "two", torchrun=True)
    assert two.returncode == 0, why(two)
    logs = [[json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
            for d in ("one", "two")]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]] == list(range(1, steps + 1))
    for r1, r2 in zip(*logs):
        for key in ("total", "contrastive", "regression"):
            assert abs(r1[key] - r2[key]) <= 1e-4 * abs(r1[key]), (r1["step"], key, r1[key], r2[key])
    a, b = load(tmp_path / "one" / LAST)["model"], load(tmp_path / "two" / LAST)["model"]
    start = load(ready / "mae.pt")["model"]
    assert not torch.equal(a["encoder.norm.weight"], start["norm.weight"])  # it trained
    trained = [k for k in a if not torch.equal(a[k], start.get(k.removeprefix("encoder."), a[k] + 1))]
    diff = torch.cat([(a[k] - b[k]).abs().reshape(-1) for k in trained])
    assert diff.max() <= steps * lr * 1.01, diff.max()
    assert diff.median() <= 1e-6, diff.median()


def test_killed_and_resumed_run_is_bit_identical(ready, tmp_path):
    args = ["--batch_size", "8", "--epochs", "3", "--ckpt_every", "1"]  # dropout on: the RNG state is restored too
    ref = run(args, ready, tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "killed"
    proc = run(args, ready, out, popen=True, extra_env=SLOW_SAVES)
    kill_after_checkpoint(proc, out / LAST, 6)  # 12 steps, 4 an epoch: killed mid-epoch, after dropout has drawn
    assert load(out / LAST)["step"] < 12
    resumed = run([*args, "--resume"], ready, out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = load(tmp_path / "ref" / LAST)["model"], load(out / LAST)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_exported_encoder_is_a_plain_vit_for_pacx_and_timm(ready):
    exported = load(ready / "warm" / "encoder.pt")
    cfg = ViTConfig(**{k: v for k, v in exported["config"].items() if k != "kind"})
    assert cfg.norm_eps == 1e-5  # the Stage-2 quirk travels with the weights
    ours = VisionTransformer(cfg).eval()
    ours.load_state_dict(exported["model"], strict=True)
    import functools

    # Built from what the file says (the README's recipe for timm users), not from what this test knows.
    recipe = exported["timm"]
    ref = timm.models.vision_transformer.VisionTransformer(
        **recipe["kwargs"], norm_layer=functools.partial(torch.nn.LayerNorm, eps=recipe["layer_norm_eps"])).eval()
    ref.load_state_dict(exported["model"], strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_features(x), ref.forward_features(x), atol=1e-5, rtol=0)


def test_raw_triplets_give_the_targets_of_the_symile_arrays(tmp_path):
    """The synthetic world writes the same patients as WFDB records + a raw labs table and as Symile arrays. Reading
    the raw files (lead picking by name, mV units, percentiles fitted on the train rows) must give the targets that
    the Symile arrays (min-max scaled ECGs, stored percentiles) give: the two routes share no reading code."""
    from pacx.data.tables import file_column, read_table
    from pacx.models.labs_dae import LabDAE
    from pacx.weights import lab_dae_checkpoint
    from pacx.checkpoint import save_atomic
    from pacx.data.targets import read_lab_inputs, symile_targets, triplet_targets

    write_world(tmp_path, 12, 4, 4, seed=3, image_size=32, formats=("images", "labs", "wfdb", "npy"))
    torch.manual_seed(0)
    save_atomic(lab_dae_checkpoint(LabDAE()), tmp_path / "dae.pt")
    df = read_table(tmp_path / "triplets.csv")
    rows = np.flatnonzero(df["split"] == "train")
    ids = df["hadm_id"].iloc[rows].tolist()
    with pytest.warns(UserWarning, match="RANDOM"):
        labs = read_lab_inputs(tmp_path / "labs.csv", "hadm_id", {}, str(tmp_path / "dae.pt"), log=lambda *_: None)
        raw = triplet_targets(tmp_path / "triplets.csv", rows, "train",
                              file_column(df.iloc[rows], "ecg_path", tmp_path, "t", False), ids, ids, labs, None,
                              str(tmp_path / "dae.pt"), tmp_path / "c", "cpu", log=lambda *_: None)
        arrays = symile_targets(tmp_path / "data_npy" / "train", "train", None, str(tmp_path / "dae.pt"),
                                tmp_path / "c", "cpu", log=lambda *_: None)
    assert [str(h) for h in np.load(tmp_path / "data_npy" / "train" / "hadm_id_train.npy")] == ids
    torch.testing.assert_close(raw["labs"], arrays["labs"], atol=1e-5, rtol=0)
    cos = torch.nn.functional.cosine_similarity(raw["ecg"], arrays["ecg"], dim=1)
    assert cos.min() > 0.999, cos


def test_bad_sample_on_rank_1_ends_both_ranks(ready, tmp_path):
    """A NaN image row that only rank 1 reads: rank 1 names the file and row, rank 0 stops because its peer did, the
    run exits non-zero promptly (no deadlock in the InfoNCE gather) with no traceback from either rank."""
    import shutil

    from pacx.loader import GlobalBatchSampler

    world = tmp_path / "world"
    shutil.copytree(ready / "data_npy", world / "data_npy")
    for name in ("mae.pt", "dae.pt"):
        shutil.copy(ready / name, world / name)
    sampler = GlobalBatchSampler(32, 8, 1, 2, 0)
    sampler.set_epoch(0)
    bad_row = next(iter(sampler))[0]  # rank 1's first sample of the first step
    cxr_file = world / "data_npy" / "train" / "cxr_train.npy"
    cxr = np.load(cxr_file)
    cxr[bad_row, 0, 0, 0] = np.nan
    np.save(cxr_file, cxr)
    res = run(["--use_ecg", "false", "--batch_size", "8", "--epochs", "1", "--seed", "0"], world, tmp_path / "run",
              torchrun=True, timeout=180)
    assert res.returncode != 0
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert errors and errors[0].startswith(f"error: rank 1: {cxr_file}: row {bad_row}: expected finite"), errors
    assert all(e.startswith("error: rank 0 stopped because another process stopped") for e in errors[1:]), errors
    assert "[rank0]: Traceback" not in res.stderr and "[rank1]: Traceback" not in res.stderr


def test_skip_nonfinite_skips_a_nan_step_and_counts_it(ready, tmp_path, monkeypatch):
    """--skip_nonfinite: a NaN loss at step 2 leaves the weights of step 1 and is counted; without it the run stops."""
    import train_distill
    from pacx.models.pacx_model import PaCX

    args = ["--data", str(ready / "data_npy"), "--init", str(ready / "mae.pt"), "--labs_dae", str(ready / "dae.pt"),
            "--targets_cache", str(ready / "targets"), "--workers", "0", "--log_every", "1", "--batch_size", "8",
            "--epochs", "1", "--val_split", ""]
    train_distill.main([*args, "--max_steps", "1", "--out_dir", str(tmp_path / "ref")])
    real, calls = PaCX.forward, {"n": 0}

    def forward(self, *a):
        loss, parts, out = real(self, *a)
        calls["n"] += 1
        return (loss * float("nan"), parts, out) if calls["n"] == 2 else (loss, parts, out)

    monkeypatch.setattr(PaCX, "forward", forward)
    train_distill.main([*args, "--max_steps", "2", "--skip_nonfinite", "--out_dir", str(tmp_path / "skip")])
    a, b = load(tmp_path / "ref" / LAST), load(tmp_path / "skip" / LAST)
    assert b["step"] == 2 and b["counters"] == {"skipped": 1}
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    calls["n"] = 0
    with pytest.raises(SystemExit) as stopped:
        train_distill.main([*args, "--max_steps", "2", "--out_dir", str(tmp_path / "stop")])
    assert stopped.value.code == 2


def test_encoder_pt_is_the_best_validation_epoch(ready, tmp_path, monkeypatch, capsys):
    """As the original exports the checkpoint of the best validation total loss: encoder.pt is the merged encoder of
    the epoch whose validation loss is lowest (scripted here: 3, 1, 2, 4, so epoch 1), encoder_last.pt the last
    one's. Checked against a second run cut (--max_steps, same schedule) at the end of epoch 1, whose last export
    must be that encoder, bit for bit."""
    import train_distill

    losses = iter([3.0, 1.0, 2.0, 4.0])
    monkeypatch.setattr(train_distill, "validate", lambda model, loader, rt: {"val_loss": next(losses)})
    common = ["--data", str(ready / "data_npy"), "--init", str(ready / "mae.pt"), "--labs_dae", str(ready / "dae.pt"),
              "--targets_cache", str(ready / "targets"), "--workers", "0", "--batch_size", "8", "--epochs", "4"]
    train_distill.main([*common, "--out_dir", str(tmp_path / "full")])
    assert "(epoch 1; the last epoch's: encoder_last.pt)" in capsys.readouterr().out
    losses = iter([3.0, 1.0])
    train_distill.main([*common, "--max_steps", "8", "--out_dir", str(tmp_path / "cut")])  # 4 steps an epoch
    best, cut = (load(tmp_path / d / f)["model"] for d, f in (("full", "encoder.pt"), ("cut", "encoder_last.pt")))
    last = load(tmp_path / "full" / "encoder_last.pt")["model"]
    assert all(torch.equal(best[k], cut[k]) for k in best)
    assert not all(torch.equal(best[k], last[k]) for k in best)


def test_shuffled_pairs_control_and_retrieval_report(ready, tmp_path):
    """--shuffle_pairs pairs each training image with one other patient's targets (ECG and labs moved together, by
    one permutation), and retrieval.json reports the validation retrieval with Wilson intervals and chance."""
    import train_distill

    targets = {"ecg": torch.arange(20.0)[:, None].repeat(1, 3), "labs": torch.arange(20.0)[:, None] * 10}
    moved = train_distill.shuffled(targets, seed=1)
    order = moved["ecg"][:, 0].long()
    assert sorted(order.tolist()) == list(range(20)) and (order != torch.arange(20)).all()  # a derangement
    assert torch.equal(moved["labs"][:, 0], order.float() * 10)  # the same other patient for both targets
    res = run(["--batch_size", "8", "--epochs", "1", "--shuffle_pairs"], ready, tmp_path / "control")
    assert res.returncode == 0, why(res)
    report = json.loads((tmp_path / "control" / "retrieval.json").read_text())
    assert report["candidates"] == 8 and report["labs"]["queries"] == 8
    top1 = report["labs"]["top1"]
    assert top1["chance"] == 1 / 8 and top1["interval"][0] <= top1["value"] <= top1["interval"][1]
