"""Stage-2 losses (pacx/models/losses.py): InfoNCE against a hand-written formula, the temperature clamp, the cosine
regression loss, and a 2-process gloo run against one process on the concatenated batch (global negatives)."""
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pacx.models.losses import LearnableTemperature, cosine_regression_loss, gather_with_grad, info_nce

WORLD, B, D = 2, 3, 5


def smoothed_ce_by_hand(logits: torch.Tensor, eps: float) -> torch.Tensor:
    """Cross-entropy with targets on the diagonal and label smoothing eps over all K columns:
    q = (1 - eps) * onehot + eps / K, loss = mean_i -sum_j q_ij log softmax(logits)_ij."""
    n, k = logits.shape
    log_p = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    q = torch.full((n, k), eps / k, dtype=logits.dtype)
    q[torch.arange(n), torch.arange(n)] += 1 - eps
    return -(q * log_p).sum(dim=1).mean()


def test_info_nce_matches_hand_formula():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, 4, generator=g, dtype=torch.float64)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    an = a / a.pow(2).sum(1, keepdim=True).sqrt()
    bn = b / b.pow(2).sum(1, keepdim=True).sqrt()
    sim = scale * an @ bn.t()
    expected = 0.5 * (smoothed_ce_by_hand(sim, 0.02) + smoothed_ce_by_hand(sim.t(), 0.02))
    torch.testing.assert_close(info_nce(a, b, scale), expected)
    # Orthonormal pairs at scale 100, closed form: logits 100 on the diagonal, 0 elsewhere, K = 6 columns.
    K, eps, s = 6, 0.02, 100.0
    lse = math.log(math.exp(s) + K - 1)
    closed = -((1 - eps + eps / K) * (s - lse) + (K - 1) * (eps / K) * (-lse))
    e = torch.eye(K, dtype=torch.float64)
    torch.testing.assert_close(info_nce(e, 3 * e, torch.tensor(s, dtype=torch.float64)),
                               torch.tensor(closed, dtype=torch.float64))


def test_temperature_init_and_clamp():
    t = LearnableTemperature()
    torch.testing.assert_close(t(), torch.tensor(1 / 0.07))
    with torch.no_grad():
        t.logit_scale.fill_(10.0)  # exp = 22026
    assert t().item() == 100.0
    with torch.no_grad():
        t.logit_scale.fill_(-3.0)  # exp = 0.05
    assert t().item() == 1.0
    t().backward()
    assert t.logit_scale.grad.item() == 0.0  # clamped: the scale stops moving past the bound


def test_cosine_regression_loss():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    y = torch.tensor([[2.0, 0.0], [1.0, 0.0], [-3.0, -4.0]])  # cos = 1, 0, -1
    torch.testing.assert_close(cosine_regression_loss(x, y), torch.tensor((0.0 + 1.0 + 2.0) / 3))
    with pytest.raises(ValueError, match="same shape"):
        cosine_regression_loss(x, y[:2])


def full_batch(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(WORLD * B, D, generator=g, dtype=dtype), torch.randn(WORLD * B, D, generator=g, dtype=dtype),
            torch.tensor(math.log(1 / 0.07), dtype=dtype))


def loss_and_grads(a, b, t):
    a, b, t = a.clone().requires_grad_(), b.clone().requires_grad_(), t.clone().requires_grad_()
    loss = info_nce(a, b, t.exp().clamp(1, 100))
    loss.backward()
    return loss.detach(), a.grad, b.grad, t.grad


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        a, b, t = full_batch()
        rows = slice(rank * B, (rank + 1) * B)
        loss, ga, gb, gt = loss_and_grads(a[rows], b[rows], t)
        gathered = gather_with_grad(a[rows])
        torch.save({"loss": loss, "ga": ga, "gb": gb, "gt": gt, "gathered": gathered},
                   f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_equals_one_process(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    res = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    a, b, t = full_batch()
    loss, ga, gb, gt = loss_and_grads(a, b, t)
    assert torch.equal(res[0]["gathered"], a)  # rank r's rows land at [r*B, (r+1)*B)
    # Each rank's loss is the mean over its own rows; their mean is the full-batch loss.
    torch.testing.assert_close(sum(r["loss"] for r in res) / WORLD, loss)
    # DDP averages gradients over ranks: the effective input gradient is rank r's gradient / W, and the shared
    # logit scale's gradient is the mean of the per-rank gradients.
    torch.testing.assert_close(torch.cat([r["ga"] for r in res]) / WORLD, ga)
    torch.testing.assert_close(torch.cat([r["gb"] for r in res]) / WORLD, gb)
    torch.testing.assert_close(sum(r["gt"] for r in res) / WORLD, gt)
