"""train_mae.py end to end on CPU: learning on real X-rays, 1 vs 2 processes, kill-and-resume, bad input, --help."""
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, kill_after_checkpoint, SAMPLES
from pacx.checkpoint import LAST, load
from pacx.data.images import read_rgb_tensor
from pacx.models.mae import MaskedAutoencoder, mae_tiny
from pacx.runlog import read_jsonl
from pacx.data.transforms import eval_resize

SCRIPT = str(ROOT / "train_mae.py")
TINY = ["--model", "tiny", "--workers", "0", "--log_every", "1", "--warmup_epochs", "1"]


def run(args, **kw):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=ROOT, **kw)


def torchrun(args, port: int, timeout: float = 300):
    """train_mae.py under torchrun with 2 gloo processes of one thread each."""
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", SCRIPT, *args],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=timeout)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Twelve small gray PNGs with structure (a disc of varying size and place), 8- and 16-bit."""
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:80, :80]
    for i in range(12):
        cy, cx, r = rng.integers(20, 60), rng.integers(20, 60), rng.integers(8, 20)
        img = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, 200, 40) + rng.integers(0, 20, (80, 80))
        if i % 3 == 0:
            Image.fromarray((img * 256).astype(np.uint16)).save(d / f"img{i:02d}.png")
        else:
            Image.fromarray(img.astype(np.uint8)).save(d / f"img{i:02d}.png")
    return d


def final_weights(out_dir):
    return load(out_dir / LAST)["model"]


def test_loss_falls_on_real_xrays():
    folders = [SAMPLES / "cxr" / "nih_cxr14", SAMPLES / "cxr" / "mhh_covid19"]
    if not all(f.is_dir() for f in folders):
        pytest.skip("../shared/samples is absent")
    imgs = torch.stack([eval_resize(read_rgb_tensor(p), 64) for f in folders for p in sorted(f.glob("*.png"))])
    torch.manual_seed(0)
    model = MaskedAutoencoder(mae_tiny())
    noise = torch.rand(len(imgs), 64)  # a fixed mask to score before and after
    with torch.no_grad():
        before = model(imgs, 0.75, noise)[0].item()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95))
    for _ in range(40):
        loss = model(imgs, 0.75)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = model(imgs, 0.75, noise)[0].item()
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("accum", [1, 2])
def test_two_processes_equal_one_process(image_dir, tmp_path, accum):
    """Same global batch of 4: torchrun with 2 gloo processes x 2 images == 1 process x 4 images, after 2 steps;
    with accum 2 each process adds the gradients of 2 micro-batches of 1 image (DDP syncing the last only)."""
    common = ["--data", str(image_dir), *TINY, "--batch_size", "4", "--max_steps", "2", "--epochs", "2"]
    one = run([*common, "--out_dir", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    two = torchrun([*common, "--accum_steps", str(accum), "--out_dir", str(tmp_path / "two")], 29517 + accum)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    assert a.keys() == b.keys()
    initial = MaskedAutoencoder(mae_tiny()).state_dict()
    assert not torch.equal(a["blocks.0.attn.qkv.weight"], initial["blocks.0.attn.qkv.weight"])
    for k in a:
        x, y = a[k], b[k]
        if k.endswith("attn.qkv.bias"):
            # The key bias has an exactly-zero true gradient (softmax ignores a constant per query row), so its
            # gradient is rounding noise that Adam scales up to lr-sized steps: compare it loosely, q and v tightly.
            D = x.shape[0] // 3
            torch.testing.assert_close(x[D:2 * D], y[D:2 * D], atol=3e-5, rtol=0, msg=k)
            x, y = torch.cat([x[:D], x[2 * D:]]), torch.cat([y[:D], y[2 * D:]])
        # Micro-batches of one image add gradients in another order; Adam turns the rounding of a near-zero gradient
        # element into a larger (still << lr = 1.5e-4) step, hence the looser bound with accumulation. Adam is blind
        # to the gradient's scale, so the logged losses (the weighted micro-batch sum) are compared tightly below.
        torch.testing.assert_close(x, y, atol=2e-6 if accum == 1 else 1e-5, rtol=1e-5, msg=k)
    loss_one, loss_two = (read_jsonl(tmp_path / d / "metrics.jsonl") for d in ("one", "two"))
    assert [r["step"] for r in loss_two] == [1, 2]
    for r1, r2 in zip(loss_one, loss_two):
        assert abs(r1["loss"] - r2["loss"]) < 1e-6 * r1["loss"], (r1, r2)


def kill_and_resume(common, tmp_path, total_steps):
    """Run `common` to the end in ref/, and in killed/ SIGKILLed after a random checkpointed step then resumed;
    assert the two end bit-identical (weights and optimizer state) and the log holds every step once."""
    ref = run([*common, "--out_dir", str(tmp_path / "ref")])
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    kill_after = int(np.random.default_rng().integers(2, total_steps - 3))
    proc = subprocess.Popen([sys.executable, SCRIPT, *common, "--out_dir", str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_after_checkpoint(proc, out / LAST, kill_after)
    killed_at = load(out / LAST)["step"]
    assert killed_at < total_steps, "the run finished before it could be killed"
    refused = run([*common, "--out_dir", str(out)])  # a folder holding a run is not silently reused
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = run([*common, "--out_dir", str(out), "--resume", "true"])
    assert resumed.returncode == 0, resumed.stderr
    assert f"at step {killed_at}" in resumed.stdout
    a, b = load(tmp_path / "ref" / LAST), load(out / LAST)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for s_a, s_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(s_a[k], s_b[k]) for k in s_a)
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == list(range(1, total_steps + 1))


def test_killed_and_resumed_run_is_bit_identical(image_dir, tmp_path):
    kill_and_resume(["--data", str(image_dir), *TINY, "--batch_size", "4", "--epochs", "4", "--ckpt_every", "1"],
                    tmp_path, 12)


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_bad_image_stops_with_one_line_naming_the_file(image_dir, tmp_path, damage):
    d = tmp_path / "data"
    d.mkdir()
    for p in sorted(image_dir.glob("*.png"))[:4]:
        (d / p.name).write_bytes(p.read_bytes())
    bad = d / "img00.png"
    if damage == "corrupt":
        bad.write_bytes(bad.read_bytes()[:60])
        data = d
    else:
        data = tmp_path / "list.csv"
        data.write_text("Path\n" + "\n".join(f"data/{p.name}" for p in sorted(d.glob("*.png"))) + "\ndata/gone.png\n")
        bad = d / "gone.png"
    res = run(["--data", str(data), *TINY, "--batch_size", "2", "--epochs", "1", "--workers", "1",
               "--out_dir", str(tmp_path / "out")])
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert bad.name in lines[0]


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


def test_labs_modality_trains_from_symile_arrays(tmp_path):
    write_symile_labs(tmp_path)
    res = run(["--modality", "labs", "--data", str(tmp_path / "data_npy"), "--workers", "0", "--batch_size", "16",
               "--epochs", "10", "--warmup_steps", "4", "--log_every", "4", "--out_dir", str(tmp_path / "dae")])
    assert res.returncode == 0, res.stderr
    losses = [float(line.split("loss ")[1].split(" ")[0]) for line in res.stdout.splitlines() if "loss " in line]
    assert losses[-1] < 0.7 * losses[0], losses


def test_help_lists_every_option():
    import train_mae

    res = run(["--help"])
    assert res.returncode == 0
    for f in dataclasses.fields(train_mae.Config):
        assert f"--{f.name}" in res.stdout


def test_unknown_or_mistyped_option_is_one_line_error():
    res = run(["--data", "x", "--epochs", "many"])
    assert res.returncode == 2 and "--epochs" in res.stderr and "Traceback" not in res.stderr
    res = run(["--data", "x", "--no_such_option", "1"])
    assert res.returncode == 2 and "no_such_option" in res.stderr


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(image_dir, tmp_path):
    res = run(["--data", str(image_dir), *TINY, "--batch_size", "4", "--epochs", "3", "--ckpt_every", "1",
               "--lr", "1e12", "--warmup_epochs", "0", "--out_dir", str(tmp_path)])
    assert res.returncode == 2 and "non-finite loss" in res.stderr and "Traceback" not in res.stderr
    step = int(res.stderr.split("before step ")[1].split(";")[0])
    state = load(tmp_path / LAST)
    assert state["step"] == step - 1  # the checkpoint of the step before the failure, never a NaN one
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_labs_killed_and_resumed_run_is_bit_identical(tmp_path):
    """The lab DAE (its corruption drawn per sample) killed at a random step resumes to the same weights."""
    data = write_symile_labs(tmp_path)
    kill_and_resume(["--modality", "labs", "--data", str(data), "--workers", "0", "--batch_size", "8", "--epochs",
                     "3", "--warmup_steps", "4", "--ckpt_every", "1", "--log_every", "1"], tmp_path, 24)


@pytest.mark.parametrize("seed, workers", [(0, 0), (8, 1)])
def test_bad_image_on_one_rank_ends_every_rank(tmp_path, seed, workers):
    """A corrupt file read by one torchrun rank: that rank names it, the other says it stopped because of a peer,
    the run exits non-zero promptly (no deadlock in a collective) and no rank prints a traceback."""
    from pacx.loader import GlobalBatchSampler

    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "5.png").write_bytes(b"not a png")
    ranks = []
    for rank in range(2):
        sampler = GlobalBatchSampler(8, 4, rank, 2, seed)
        sampler.set_epoch(0)
        ranks += [rank] * (5 in [i for i, _ in sampler])
    bad_rank, = ranks
    res = torchrun(["--data", str(tmp_path), "--model", "tiny", "--img_size", "32", "--workers", str(workers),
                    "--batch_size", "4", "--epochs", "2", "--seed", str(seed), "--out_dir", str(tmp_path / "run")],
                   29530 + seed, timeout=120)
    assert res.returncode != 0
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert errors[0].startswith(f"error: rank {bad_rank}: {tmp_path / '5.png'}: not a readable image"), errors
    # The other rank's line, unless torchrun's SIGTERM (sent once a worker fails) beat its peer-loss detection.
    assert all(e.startswith(f"error: rank {1 - bad_rank} stopped because another process stopped")
               for e in errors[1:]), errors
    assert "[rank0]: Traceback" not in res.stderr and "[rank1]: Traceback" not in res.stderr


def test_labs_two_processes_with_accumulation_equal_one_process(tmp_path):
    """The lab DAE's loss is a mean over observed entries, whose count varies per sample: 2 ranks x 2 micro-batches
    of a global batch of 16 match 1 process x 16 (weights and logged losses) only because every part divides by the
    global batch's count (a per-rank mean, the reference's DDP behaviour, would not)."""
    data = write_symile_labs(tmp_path)
    common = ["--modality", "labs", "--data", str(data), "--workers", "0", "--batch_size", "16", "--max_steps", "3",
              "--epochs", "1", "--warmup_steps", "1", "--log_every", "1"]
    one = run([*common, "--out_dir", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    two = torchrun([*common, "--accum_steps", "2", "--out_dir", str(tmp_path / "two")], 29541)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5, msg=k)
    for r1, r2 in zip(*(read_jsonl(tmp_path / d / "metrics.jsonl") for d in ("one", "two"))):
        assert abs(r1["loss"] - r2["loss"]) < 1e-6 * r1["loss"], (r1, r2)
