"""The Stage-2 losses: symmetric InfoNCE over the global batch with a learnable temperature, and cosine regression.

Implements METHOD.md "Stage 2" (contrastive and regression losses) following the reference PaCX-MAE
(Lyce24/PACX-MAE `Modules/pacx_lit.py`, `CLIPRegressionLoss`): L2-normalised embeddings (eps 1e-6), logits
`exp(t).clamp(1, 100) * a @ b.T` with t initialised to log(1 / 0.07) (Radford et al., CLIP, sec. 2.5), cross-entropy
with label smoothing 0.02, each rank's rows scored against the columns of *all* ranks, the two directions averaged.
`gather_with_grad` plays the role of `torch.distributed.nn.functional.all_gather` / Lightning's
`all_gather(sync_grads=True)` used there.

Notation: B = local batch, W = world size (ranks), D = embedding width.
"""
import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends every rank's gradient for a slice back to the rank that owns it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        return torch.cat(parts, dim=0)  # (W*B, D), rank r's rows at [r*B, (r+1)*B)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # Rank s's loss also depends on our rows (as its negatives/positives), so the gradient of the summed
        # per-rank losses w.r.t. our slice is the sum over ranks of their gradients for it.
        grad = grad.contiguous().clone()  # all_reduce works in place; leave autograd's buffer alone
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]  # (B, D)


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` (B, ...) from all ranks along dim 0 -> (W*B, ...), keeping the gradient path to the local
    slice; the identity outside torch.distributed. Every rank must pass the same B (use drop_last=True)."""
    if not _distributed() or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


class LearnableTemperature(nn.Module):
    """One learnable logit scale shared by all pairs: stores t = log(1 / T0) and returns exp(t) clamped to
    [min_scale, max_scale] (clamping, as CLIP, keeps the softmax from becoming a hard max early in training)."""

    def __init__(self, init_temperature: float = 0.07, min_scale: float = 1.0, max_scale: float = 100.0):
        super().__init__()
        self.min_scale, self.max_scale = min_scale, max_scale
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def forward(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(self.min_scale, self.max_scale)


def info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor, label_smoothing: float = 0.02,
             eps: float = 1e-6) -> torch.Tensor:
    """Symmetric InfoNCE between paired rows of a (B, D) and b (B, D), negatives from the global batch.

    `logit_scale` is the multiplier itself (already exp'd and clamped, e.g. `LearnableTemperature()()`).
    Returns 0.5 * (CE(a -> all b) + CE(b -> all a)), each a mean over the local rows. Under DDP the mean of this
    value over ranks equals the single-process loss on the concatenated batch, and DDP's gradient averaging
    gives that loss's gradients.
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"info_nce: expected two (B, D) tensors of equal shape, found {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    a = F.normalize(a, dim=-1, eps=eps)
    b = F.normalize(b, dim=-1, eps=eps)
    a_all, b_all = gather_with_grad(a), gather_with_grad(b)  # (W*B, D)
    rank = dist.get_rank() if _distributed() else 0
    # Local row i's positive is global column rank*B + i.
    targets = torch.arange(a.shape[0], device=a.device) + rank * a.shape[0]  # (B,)
    loss_ab = F.cross_entropy(logit_scale * a @ b_all.t(), targets, label_smoothing=label_smoothing)  # (B, W*B)
    loss_ba = F.cross_entropy(logit_scale * b @ a_all.t(), targets, label_smoothing=label_smoothing)  # (B, W*B)
    return 0.5 * (loss_ab + loss_ba)


def cosine_regression_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """mean over rows of (1 - cos(pred, target)); the target is a frozen embedding, so no gradient flows to it."""
    if pred.shape != target.shape:
        raise ValueError(f"cosine_regression_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} "
                         f"must have the same shape")
    cos = (F.normalize(pred, dim=-1, eps=eps) * F.normalize(target.detach(), dim=-1, eps=eps)).sum(dim=-1)  # (B,)
    return (1.0 - cos).mean()
