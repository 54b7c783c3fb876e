"""Process setup shared by every script: torchrun/DDP, device, bf16 autocast, seeding, rank-0 printing.

One code path for CPU and CUDA (STYLE.md points 7 and 9; after nanochat `common.py::compute_init`): under `torchrun`
the process group uses NCCL on CUDA and gloo on CPU; a plain `python script.py` is a world of one.
"""
import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from pacx.errors import PacxError


AMP = ("auto", "bf16", "off")
AMP_HELP = "auto: bf16 autocast on CUDA, fp32 on CPU | bf16: bf16 autocast on any device, CPU too | off: fp32"


@dataclass
class Runtime:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    amp: str  # auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 (on any device) | off

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self):
        """bf16 autocast (no GradScaler needed for bf16) on CUDA by default, on the CPU too with amp "bf16" (the same
        code path: how the mixed-precision path is tested without a GPU); else fp32."""
        if self.amp == "bf16" or (self.amp == "auto" and self.device.type == "cuda"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def print0(self, *args, **kwargs) -> None:
        if self.is_main:
            print(*args, **kwargs, flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    """`auto` (CUDA when there is a GPU), `cpu` or `cuda` (this process's GPU under torchrun)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise PacxError(f"--device: expected auto, cpu or cuda, got {name!r}")
    return torch.device(name, int(os.environ.get("LOCAL_RANK", "0"))) if name == "cuda" else torch.device(name)


def init_runtime(device: str = "auto", seed: int = 0, amp: str = "auto") -> Runtime:
    """Join the torchrun process group if there is one, pick the device and seed every RNG.

    All ranks use the same seed, so they build identical models (DDP also broadcasts rank 0's weights); what must
    differ per rank (the data shard) is decided by the sampler, not by the seed.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device)
    if amp not in AMP:
        raise PacxError(f"--amp: expected one of {', '.join(AMP)}, got {amp!r}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls outside autocast use TF32 tensor cores
        torch.backends.cudnn.allow_tf32 = True
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", device_id=dev
                                if dev.type == "cuda" else None)
    seed_everything(seed)
    return Runtime(rank=rank, local_rank=local_rank, world_size=world_size, device=dev, amp=amp)


def shutdown(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (identity in a world of one)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


def wrap_for_training(model: torch.nn.Module, rt: Runtime, compile: bool = False) -> torch.nn.Module:
    """DDP when there are several processes (gradients averaged over ranks), then optionally torch.compile. The
    unwrapped `model` stays the one to save (STYLE.md point 10)."""
    if rt.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[rt.local_rank] if rt.device.type == "cuda" else None)
    return torch.compile(model) if compile else model


def micro_batches(tensors: list[torch.Tensor], n: int) -> list[tuple[list[torch.Tensor], float]]:
    """Split a batch into `n` micro-batches for gradient accumulation: [(tensors, weight)], the weights being each
    micro-batch's share of the samples, so that the weighted sum of per-micro-batch mean losses is the batch mean."""
    size = len(tensors[0])
    chunks = list(zip(*(t.tensor_split(n) for t in tensors)))
    return [(list(c), len(c[0]) / size) for c in chunks if len(c[0])]


def sync_gradients(model: torch.nn.Module, sync: bool):
    """Context for one backward pass: DDP all-reduces gradients only when `sync` (the last micro-batch of a step),
    the others accumulate locally (`DistributedDataParallel.no_sync`). A no-op outside DDP."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    inner = getattr(model, "_orig_mod", model)  # under torch.compile
    return inner.no_sync() if isinstance(inner, DDP) and not sync else contextlib.nullcontext()
