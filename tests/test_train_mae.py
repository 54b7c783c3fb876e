"""train_mae.py end to end on CPU: learning on real X-rays, 1 vs 2 processes, kill-and-resume, bad input, --help."""
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SAMPLES, assert_same_training, kill_and_resume, run_script, torchrun_script, why
from pacx.checkpoint import LAST, load
from pacx.data.images import read_rgb_tensor
from pacx.models.mae import MaskedAutoencoder, mae_tiny
from pacx.data.transforms import eval_resize

TINY = ["--model", "tiny", "--workers", "0", "--log_every", "1", "--warmup_epochs", "1"]


def run(args, **kw):
    return run_script("train_mae.py", args, **kw)


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
    """Same global batch of 4: torchrun with 2 gloo processes x 2 images == 1 process x 4 images, after 3 steps;
    with accum 2 each process adds the gradients of 2 micro-batches of 1 image (DDP syncing the last only)."""
    common = ["--data", str(image_dir), *TINY, "--batch_size", "4", "--max_steps", "3", "--epochs", "2"]
    one = run([*common, "--out_dir", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    two = torchrun_script("train_mae.py", [*common, "--accum_steps", str(accum), "--out_dir", str(tmp_path / "two")])
    assert two.returncode == 0, why(two)
    torch.manual_seed(0)
    initial = MaskedAutoencoder(mae_tiny()).state_dict()  # the run's init: seed 0, the model built first
    assert_same_training(tmp_path / "one", tmp_path / "two", initial, lr=1.5e-4)


def test_killed_and_resumed_run_is_bit_identical(image_dir, tmp_path):
    """12 steps (3 an epoch), killed after step 7: mid-epoch, so the sampler's position is restored too."""
    kill_and_resume("train_mae.py", ["--data", str(image_dir), *TINY, "--batch_size", "4", "--epochs", "4",
                                     "--ckpt_every", "1"], tmp_path, total_steps=12, kill_after=7)


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
    args = ["--data", str(tmp_path), "--model", "tiny", "--img_size", "32", "--workers", str(workers),
            "--batch_size", "4", "--epochs", "2", "--seed", str(seed), "--out_dir", str(tmp_path / "run")]
    res = torchrun_script("train_mae.py", args, timeout=120)
    assert res.returncode != 0
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert errors[0].startswith(f"error: rank {bad_rank}: {tmp_path / '5.png'}: not a readable image"), errors
    # The other rank's line, unless torchrun's SIGTERM (sent once a worker fails) beat its peer-loss detection.
    assert all(e.startswith(f"error: rank {1 - bad_rank} stopped because another process stopped")
               for e in errors[1:]), errors
    assert "[rank0]: Traceback" not in res.stderr and "[rank1]: Traceback" not in res.stderr


