"""AdamW with the reference parameter groups, and the warmup + cosine learning-rate schedule.

METHOD.md "Stage 1a" / "Stage 2" / "Quirks": no weight decay on 1-D parameters (norms, tokens' biases) and biases in
Stage 1 (MAE `util/misc.py::param_groups_weight_decay`); Stage 2 decays every trainable parameter. The reference
steps its schedule once per *epoch* (Lightning `interval: "epoch"`, warmup factor (e + 1) / warmup); per-step
stepping (the MAE paper's per-iteration schedule, factor t / warmup on a fractional epoch t) is a flag.
"""
import math

import torch

from pacx.dist import all_reduce_mean


def param_groups(model: torch.nn.Module, weight_decay: float, decay_all: bool = False,
                 lr_scale: float = 1.0) -> list[dict]:
    """Trainable parameters of `model` split into decay / no-decay groups (biases and 1-D tensors get no decay, unless
    `decay_all`). Each group trains at `lr_scale` x the learning rate `set_lr` is given (fine-tuning: the backbone at
    0.1 x the head's).

    One rule for every stage. The reference's Stage-3 rule (`cl_lit.py`: no decay when p.ndim < 2 or the name holds
    "bias" or "norm") picks the same parameters here, since every norm parameter is 1-D (tested).
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if not decay_all and (p.ndim <= 1 or name.endswith(".bias")):
            no_decay.append(p)
        else:
            decay.append(p)
    return [g for g in ({"params": decay, "weight_decay": weight_decay, "lr_scale": lr_scale},
                        {"params": no_decay, "weight_decay": 0.0, "lr_scale": lr_scale}) if g["params"]]


def make_adamw(groups: list[dict], lr: float, betas=(0.9, 0.999)):
    """torch.optim.AdamW with the fused kernel, on CUDA and on CPU alike (on a 2-core CPU it steps ViT-B's
    parameters 2.9-3.1x faster than the default per-tensor loop: `python -m benchmarks.fast_paths`)."""
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=True)
    set_lr(optimizer, lr)
    return optimizer


def lr_factor(t: float, warmup: float, total: float, floor: float = 0.0, per_step: bool = False) -> float:
    """Multiplier of the base learning rate at time `t` (in epochs; fractional when `per_step`).

    Linear warmup, then half-cosine to 0, clamped from below at `floor` (Stage 2 uses 0.01).
    """
    if t < warmup:
        return (t if per_step else t + 1) / max(warmup, 1e-12)
    progress = (t - warmup) / max(total - warmup, 1e-12)
    return max(floor, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group at `lr` times its `lr_scale` (see `param_groups`)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def finish_step(params, optimizer: torch.optim.Optimizer, loss: torch.Tensor, grad_clip: float = 0.0,
                skip_nonfinite: bool = False) -> bool:
    """After `backward()`: clip the gradient norm (when `grad_clip` > 0) and step the optimizer.

    With `skip_nonfinite` a step whose loss (on any rank) or gradient norm is NaN/Inf is skipped instead: gradients
    dropped, optimizer untouched. That costs one host synchronisation per step, so it is a flag; without it the
    loss meter's check at each log line and checkpoint stops the run instead. Returns whether the step was taken.
    """
    params = [p for p in params if p.grad is not None]
    if skip_nonfinite:
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
        bad = (~torch.isfinite(loss.detach().float()) | ~torch.isfinite(norm)).float()
        if all_reduce_mean(bad).item() > 0:  # every rank sees the same verdict: they skip together
            optimizer.zero_grad(set_to_none=True)
            return False
    elif grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return True
