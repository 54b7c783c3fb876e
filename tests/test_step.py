"""One optimizer step of the training scripts: gradient accumulation over micro-batches, the non-finite guard and
`--skip_nonfinite` (pacx/dist.py `micro_batches`, pacx/optim.py `finish_step`, train_mae.py end to end)."""
import numpy as np
import pytest
import torch
from PIL import Image

import train_mae
from pacx.checkpoint import LAST, load
from pacx.dist import micro_batches
from pacx.models.mae import MaskedAutoencoder, mae_tiny
from pacx.optim import finish_step
from pacx.runlog import read_jsonl


def test_accumulated_micro_batch_gradients_equal_the_batch_gradient():
    torch.manual_seed(0)
    model = MaskedAutoencoder(mae_tiny())
    x, noise = torch.rand(5, 3, 64, 64), torch.rand(5, 64)  # 5 images: micro-batches of 2, 2 and 1
    model(x, 0.75, noise)[0].backward()
    full = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    total = 0.0
    parts = micro_batches([x, noise], 3)
    assert [len(m[0]) for m, _ in parts] == [2, 2, 1]
    for (xm, nm), w in parts:
        loss = model(xm, 0.75, nm)[0] * w
        loss.backward()
        total += loss.item()
    with torch.no_grad():
        assert abs(total - model(x, 0.75, noise)[0].item()) < 1e-6
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, full[n], atol=1e-7, rtol=1e-5, msg=n)


def test_more_micro_batches_than_samples_leaves_none_empty():
    parts = micro_batches([torch.arange(2)], 4)
    assert [(m[0].tolist(), w) for m, w in parts] == [([0], 0.5), ([1], 0.5)]


def _one_param_step(grad: float, loss: float, **kw):
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = torch.optim.SGD([p], lr=0.5)
    p.grad = torch.tensor([grad, 2 * grad])
    took = finish_step([p], opt, torch.tensor(loss), **kw)
    return took, p.detach(), p.grad


def test_finish_step_clips_like_clip_grad_norm_and_steps():
    took, p, _ = _one_param_step(3.0, 1.0, grad_clip=1.0)
    g = torch.tensor([3.0, 6.0])
    assert took and torch.allclose(p, torch.tensor([1.0, 2.0]) - 0.5 * g / g.norm(), atol=1e-6)
    took, p, _ = _one_param_step(3.0, 1.0, grad_clip=1.0, skip_nonfinite=True)  # same step under the flag
    assert took and torch.allclose(p, torch.tensor([1.0, 2.0]) - 0.5 * g / g.norm(), atol=1e-6)


@pytest.mark.parametrize("grad, loss", [(float("nan"), 1.0), (float("inf"), 1.0), (1.0, float("nan")),
                                        (1.0, float("inf"))])
def test_finish_step_skips_a_non_finite_step_only_under_the_flag(grad, loss):
    took, p, g = _one_param_step(grad, loss, skip_nonfinite=True)
    assert not took and torch.equal(p, torch.tensor([1.0, 2.0])) and g is None
    took, p, _ = _one_param_step(grad, loss)  # without the flag the step is taken (the loss meter stops the run)
    assert took


class InfGradient(torch.autograd.Function):
    """Identity forward, infinite gradient backward: a finite loss whose gradient is not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(d / f"{i}.png")
    return d


def run_mae(image_dir, out, steps, *extra, bad_step=None, kind="nan", monkeypatch=None):
    """train_mae.main in this process; the loss of step `bad_step` made NaN, or its gradient Inf."""
    if bad_step is not None:
        calls = {"n": 0}
        real = MaskedAutoencoder.forward_loss

        def forward_loss(self, *a):
            loss = real(self, *a)
            calls["n"] += 1
            if calls["n"] != bad_step:
                return loss
            return loss * float("nan") if kind == "nan" else InfGradient.apply(loss)

        monkeypatch.setattr(MaskedAutoencoder, "forward_loss", forward_loss)
    train_mae.main(["--data", str(image_dir), "--model", "tiny", "--img_size", "32", "--workers", "0",
                    "--batch_size", "4", "--epochs", "2", "--warmup_epochs", "1", "--log_every", "1",
                    "--max_steps", str(steps), "--out_dir", str(out), *extra])
    if bad_step is not None:
        monkeypatch.undo()


@pytest.mark.parametrize("kind", ["nan", "inf_gradient"])
def test_skip_nonfinite_leaves_the_state_of_the_step_before(image_dir, tmp_path, monkeypatch, kind):
    run_mae(image_dir, tmp_path / "ref", 1)
    run_mae(image_dir, tmp_path / "skip", 2, "--skip_nonfinite", bad_step=2, kind=kind, monkeypatch=monkeypatch)
    a, b = load(tmp_path / "ref" / LAST), load(tmp_path / "skip" / LAST)
    assert b["step"] == 2 and b["counters"] == {"skipped": 1}
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for s_a, s_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(s_a[k], s_b[k]) for k in s_a)  # Adam's moments and step count untouched
    log = read_jsonl(tmp_path / "skip" / "metrics.jsonl")
    assert [r["skipped"] for r in log] == [0, 1] and "loss" not in log[1]


def test_skip_count_survives_a_resume(image_dir, tmp_path, monkeypatch):
    run_mae(image_dir, tmp_path, 2, "--skip_nonfinite", "--ckpt_every", "1", bad_step=1, monkeypatch=monkeypatch)
    run_mae(image_dir, tmp_path, 4, "--skip_nonfinite", "--resume", "--max_steps", "4")
    assert load(tmp_path / LAST)["counters"] == {"skipped": 1}
    assert [r["skipped"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 1, 1, 1]


def test_inf_gradient_without_the_flag_stops_before_saving_nan_weights(image_dir, tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_mae(image_dir, tmp_path, 2, "--ckpt_every", "1", bad_step=2, kind="inf_gradient",
                monkeypatch=monkeypatch)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: non-finite weights at step 2") and "\n" not in err
    state = load(tmp_path / LAST)
    assert state["step"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())
