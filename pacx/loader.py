"""Deterministic, resumable, world-size-independent data loading.

The sampler draws one permutation per epoch from (seed, epoch) and cuts it into *global* batches; rank r takes the
r-th contiguous slice of each. Every position also gets its own 63-bit sample seed, and the dataset draws all of that
sample's randomness (crop, flip, MAE mask noise) from a generator seeded with it. So:
- one process with batch 8 sees exactly the samples and augmentations that two processes with batch 4 see together;
- a run resumed at step k of an epoch (`set_epoch(e, start_step=k)`) replays the same batches as one never stopped;
- worker count and worker scheduling change nothing.

A sample that cannot be read does not raise inside a worker (which would surface as a multi-page traceback): the
worker returns a `SampleFailure` carrying the one-line message, and the training loop raises it as a `DataError`.
"""
import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from pacx.errors import DataError


class GlobalBatchSampler(Sampler):
    def __init__(self, n: int, global_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True):
        if global_batch % world_size:
            raise DataError(f"--batch_size {global_batch} (the global batch) is not divisible by the number of "
                            f"processes {world_size}")
        if n < global_batch:
            raise DataError(f"--batch_size {global_batch} is larger than the data set ({n} samples): no full batch to "
                            f"train on; pass --batch_size {n} or less")
        self.n, self.global_batch, self.rank, self.world_size = n, global_batch, rank, world_size
        self.local_batch = global_batch // world_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start_step = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.global_batch  # drop the last partial global batch, as the reference (drop_last=True)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.local_batch

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        seeds = rng.integers(0, 2**63 - 1, size=self.n)  # one per position of the epoch
        for step in range(self.start_step, self.steps_per_epoch):
            lo = step * self.global_batch + self.rank * self.local_batch
            for pos in range(lo, lo + self.local_batch):
                yield int(order[pos]), int(seeds[pos])


class SampleFailure:
    def __init__(self, message: str):
        self.message = message


class SeededView(Dataset):
    """Items (index, seed) -> `fn(base[index], generator)`, with read errors turned into `SampleFailure`."""

    def __init__(self, base, fn):
        self.base, self.fn = base, fn

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item):
        index, seed = item
        g = torch.Generator().manual_seed(seed)
        try:
            return self.fn(self.base[index], g)
        except (DataError, OSError, ValueError) as e:  # reader errors are one-line messages naming the file
            return SampleFailure(str(e).splitlines()[0] if str(e) else f"sample {index}: {type(e).__name__}")


def collate(batch):
    for item in batch:
        if isinstance(item, SampleFailure):
            return item
    return default_collate(batch)


def check_batch(batch):
    """Raise the worker's one-line error in the main process."""
    if isinstance(batch, SampleFailure):
        raise DataError(batch.message)
    return batch


def cap_workers(requested: int, log=print) -> int:
    """`--workers`, capped at the CPU cores this process may use: beyond that workers only compete for the cores,
    and torch warns about it on every loader it starts. One `log` line says when the cap applies."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if requested > cores:
        log(f"--workers {requested}: this process may use {cores} CPU core(s), so {cores} data-loading worker(s) "
            f"are used")
        return cores
    return requested


def make_loader(dataset: Dataset, sampler: GlobalBatchSampler, workers: int, device: torch.device) -> DataLoader:
    return DataLoader(
        dataset, batch_size=sampler.local_batch, sampler=sampler, num_workers=workers, collate_fn=collate,
        pin_memory=device.type == "cuda", drop_last=False, persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
        # Its own generator: creating an iterator then draws nothing from the global RNG, whose state (dropout)
        # a resumed run restores from the checkpoint.
        generator=torch.Generator().manual_seed(0),
    )
