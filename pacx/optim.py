"""AdamW with the reference parameter groups, and the warmup + cosine learning-rate schedule.

DESIGN.md "Stage 1a" / "Stage 2" / "Quirks": no weight decay on 1-D parameters (norms, tokens' biases) and biases in
Stage 1 (MAE `util/misc.py::param_groups_weight_decay`); Stage 2 decays every trainable parameter. The reference
steps its schedule once per *epoch* (Lightning `interval: "epoch"`, warmup factor (e + 1) / warmup); per-step
stepping (the MAE paper's per-iteration schedule, factor t / warmup on a fractional epoch t) is a flag.
"""
import math

import torch


def param_groups(model: torch.nn.Module, weight_decay: float, decay_all: bool = False) -> list[dict]:
    """Trainable parameters split into decay / no-decay groups (biases and 1-D tensors get no decay)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if not decay_all and (p.ndim <= 1 or name.endswith(".bias")):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def make_adamw(groups: list[dict], lr: float, betas=(0.9, 0.999), device: torch.device | None = None):
    """torch.optim.AdamW; the fused CUDA kernel when the parameters live on a GPU."""
    fused = device is not None and device.type == "cuda"
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=fused)


def lr_factor(t: float, warmup: float, total: float, floor: float = 0.0, per_step: bool = False) -> float:
    """Multiplier of the base learning rate at time `t` (in epochs; fractional when `per_step`).

    Linear warmup, then half-cosine to 0, clamped from below at `floor` (Stage 2 uses 0.01).
    """
    if t < warmup:
        return (t if per_step else t + 1) / max(warmup, 1e-12)
    progress = (t - warmup) / max(total - warmup, 1e-12)
    return max(floor, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
