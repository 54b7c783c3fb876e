"""What every training script shares: the common options, and a `Run` that keeps a run's books.

train_mae.py, train_labs.py and train_distill.py each declare one config dataclass that extends `TrainConfig` with
their own options and reference defaults, and each keeps its loop in view (STYLE.md point 8):

    run = Run(cfg, rt, model, optimizer, sampler, model_config, resume_from)
    for epoch in run.epochs():                 # sampler position and per-epoch learning rate
        for batch in run.batches(loader):      # per-step learning rate, one-line data errors, stops at the end
            ... forward, backward ...
            run.step_done(loss, {"loss": loss}, batch_images)   # optimizer step, log line, periodic checkpoint
        run.save()                             # the checkpoint at every epoch end

`Run` holds what a loop must not get wrong and should not repeat: resuming (model, optimizer, RNGs, counters, the
metrics log cut back to the checkpoint), the warmup + cosine schedule (METHOD.md "Quirks": per epoch by default),
the optimizer step with its non-finite guard (`pacx.optim.finish_step`), progress lines with ETA, the JSONL log and
atomic checkpoints that never hold non-finite weights.
"""
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from pacx import checkpoint as ckpt
from pacx.config import opt
from pacx.dist import Runtime, all_reduce_mean
from pacx.loader import GlobalBatchSampler, check_batch
from pacx.optim import finish_step, lr_factor, set_lr
from pacx.runlog import LossMeter, Progress, open_run


@dataclass
class TrainConfig:
    """Options of every training script; each script sets its own defaults (the reference values of its stage)."""
    epochs: int = opt(1, "training epochs")
    batch_size: int = opt(1, "global batch over all processes")
    lr: float = opt(1e-4, "AdamW learning rate (absolute)")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    decay_all: bool = opt(False, "decay every trainable parameter (else none on 1-D parameters and biases)")
    warmup_epochs: float = opt(0.0, "linear warmup, in epochs")
    warmup_steps: int = opt(0, "linear warmup in steps instead (0: use --warmup_epochs)")
    lr_floor: float = opt(0.0, "cosine schedule floor (fraction of --lr)")
    per_step_lr: bool = opt(False, "step the schedule every step (else once per epoch, the reference)")
    grad_clip: float = opt(0.0, "clip the gradient norm (0: off)")
    skip_nonfinite: bool = opt(False, "skip a step with a NaN/Inf loss or gradient (counted in the log) instead of "
                                      "stopping; costs one host sync per step")
    workers: int = opt(4, "data-loading processes per process")
    device: str = opt("auto", "auto | cpu | cuda")
    amp: bool = opt(True, "bf16 autocast on CUDA (ignored on CPU)")
    compile: bool = opt(False, "torch.compile the model")
    seed: int = opt(0, "seed for the model init, data order, augmentation and masks")
    out_dir: str = opt("runs/train", "folder for last.pt, metrics.jsonl and config.json")
    resume: bool = opt(False, "continue the run in --out_dir from its last.pt")
    overwrite: bool = opt(False, "replace a run already in --out_dir")
    ckpt_every: int = opt(0, "also checkpoint every N steps (0: at the end of each epoch only)")
    log_every: int = opt(10, "steps between progress lines / log records")
    max_steps: int = opt(0, "stop after this many steps in all (0: run every epoch)")


def prepare_run_dir(cfg: TrainConfig, rt: Runtime) -> Path | None:
    """`pacx.checkpoint.prepare_out_dir` on every rank, then a barrier: no rank writes into --out_dir (rank 0's log,
    config.json) before every rank has looked at what was there. Returns the checkpoint to resume from (or None)."""
    resume_from = ckpt.prepare_out_dir(cfg.out_dir, cfg.resume, cfg.overwrite)
    if rt.distributed:
        dist.barrier()
    return resume_from


class Run:
    """The books of one training run in `cfg.out_dir` (see the module docstring)."""

    def __init__(self, cfg: TrainConfig, rt: Runtime, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 sampler: GlobalBatchSampler, model_config: dict, resume_from: Path | None,
                 on_save: Callable[[], None] | None = None, show: tuple[str, ...] | None = None):
        self.cfg, self.rt, self.model, self.optimizer, self.sampler = cfg, rt, model, optimizer, sampler
        self.model_config, self.on_save, self.show = model_config, on_save, show
        self.out = Path(cfg.out_dir)
        self.steps_per_epoch = sampler.steps_per_epoch
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.warmup = cfg.warmup_steps / self.steps_per_epoch if cfg.warmup_steps else cfg.warmup_epochs
        self.counters = {"skipped": 0}  # steps skipped under --skip_nonfinite; saved, so they survive a resume
        self.step, self.log = open_run(self.out, rt, resume_from, model, optimizer,
                                       {"script": asdict(cfg), "model": model_config}, self.counters)
        self.progress = Progress(self.total_steps, start_step=self.step)
        self.meter = LossMeter()
        self.epoch = self.step // self.steps_per_epoch

    def lr_at(self, t: float) -> float:
        """The learning rate at time `t` in epochs (fractional when the schedule steps per step)."""
        return self.cfg.lr * lr_factor(t, self.warmup, self.cfg.epochs, self.cfg.lr_floor, self.cfg.per_step_lr)

    def epochs(self):
        """Yield each epoch still to run, with the sampler placed at the run's step and the epoch's learning rate."""
        while self.step < self.total_steps:
            self.epoch = self.step // self.steps_per_epoch
            self.sampler.set_epoch(self.epoch, start_step=self.step % self.steps_per_epoch)
            if not self.cfg.per_step_lr:
                set_lr(self.optimizer, self.lr_at(self.epoch))
            yield self.epoch

    def batches(self, loader):
        """The loader's batches (a sample's read error raised as one line), with the per-step learning rate; ends
        at the run's last step."""
        for batch in loader:
            if self.cfg.per_step_lr:
                set_lr(self.optimizer, self.lr_at(self.step / self.steps_per_epoch))
            yield check_batch(batch)
            if self.step >= self.total_steps:
                return

    def step_done(self, loss: torch.Tensor, parts: dict, images: int) -> None:
        """After `loss.backward()`: clip, step the optimizer (or skip a non-finite step under --skip_nonfinite),
        count `images` (this process's batch), print and log every --log_every steps, checkpoint every
        --ckpt_every."""
        cfg, rt = self.cfg, self.rt
        self.step += 1
        if finish_step(self.model.parameters(), self.optimizer, loss, cfg.grad_clip, cfg.skip_nonfinite):
            self.meter.add(parts)
        else:
            self.counters["skipped"] += 1
            rt.print0(f"step {self.step}: non-finite loss or gradient, step skipped ({self.counters['skipped']} "
                      f"so far)")
        self.progress.update(images * rt.world_size)
        if self.step % cfg.log_every == 0 or self.step == self.total_steps:
            self.meter.check_finite(self.step, self.out / ckpt.LAST)
            means, lr = self.meter.means(all_reduce_mean), self.optimizer.param_groups[0]["lr"]
            shown = means if self.show is None else {k: means.get(k, math.nan) for k in self.show}
            rt.print0(self.progress.line(self.step, epoch=self.epoch, **shown, lr=lr))
            self.log.write(step=self.step, epoch=self.epoch, **means, lr=lr,
                           img_per_s=self.progress.images_per_second(),
                           **(self.counters if cfg.skip_nonfinite else {}))
        if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
            self.save()

    def epoch_ended(self) -> bool:
        """Whether the last step closed an epoch or the run (when epoch-end work such as validation is due)."""
        return self.step % self.steps_per_epoch == 0 or self.step == self.total_steps

    def save(self) -> None:
        """Checkpoint `last.pt` atomically (rank 0), after checking the weights are finite; then `on_save`."""
        self.meter.check_finite(self.step, self.out / ckpt.LAST, self.model.parameters())
        if self.rt.is_main:
            ckpt.save_training_state(self.out / ckpt.LAST, self.model, self.optimizer, self.step,
                                     self.steps_per_epoch, config=self.model_config, script_config=asdict(self.cfg),
                                     counters=self.counters)
            if self.on_save is not None:
                self.on_save()
