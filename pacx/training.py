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
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from pacx import checkpoint as ckpt
from pacx import rundir
from pacx.config import opt
from pacx.dist import AMP_HELP, Runtime, all_reduce_mean, micro_batches, sync_gradients
from pacx.loader import GlobalBatchSampler, check_batch
from pacx.optim import finish_step, lr_factor, set_lr
from pacx.errors import PacxError
from pacx.runlog import JsonlLog, LossMeter, Progress


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
    amp: str = opt("auto", AMP_HELP)
    compile: bool = opt(False, "torch.compile the model")
    seed: int = opt(0, "seed for the model init, data order, augmentation and masks")
    out_dir: str = opt("runs/train", "folder for last.pt, metrics.jsonl and config.json")
    resume: bool = opt(False, "continue the run in --out_dir from its last.pt")
    overwrite: bool = opt(False, "replace a run already in --out_dir (its files are removed once the new run's inputs "
                                 "have been read and checked)")
    allow_changes: tuple[str, ...] = opt((), "--resume: options allowed to differ from the run's own (e.g. epochs); "
                                             "others are refused")
    ckpt_every: int = opt(0, "also checkpoint every N steps (0: at the end of each epoch only)")
    log_every: int = opt(10, "steps between progress lines / log records")
    max_steps: int = opt(0, "stop after this many steps in all (0: run every epoch)")


# What a training run writes in --out_dir; --overwrite removes these (and only these) of the replaced run.
RUN_FILES = (ckpt.LAST, f"{ckpt.LAST}.tmp", "metrics.jsonl", "config.json", "encoder.pt", "encoder.pt.tmp",
             "encoder_last.pt", "encoder_last.pt.tmp", "lab_percentiles.json", "retrieval.json")


def check_options(cfg: TrainConfig) -> None:
    """Refuse option values that would train nothing or something else than asked, before any work."""
    bad = [(name, value, want) for name, value, want, ok in (
        ("epochs", cfg.epochs, ">= 1", cfg.epochs >= 1),
        ("batch_size", cfg.batch_size, ">= 1", cfg.batch_size >= 1),
        ("lr", cfg.lr, "a number > 0", math.isfinite(cfg.lr) and cfg.lr > 0),
        ("weight_decay", cfg.weight_decay, "a number >= 0", math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0),
        ("warmup_epochs", cfg.warmup_epochs, "a number >= 0",
         math.isfinite(cfg.warmup_epochs) and cfg.warmup_epochs >= 0),
        ("warmup_steps", cfg.warmup_steps, ">= 0", cfg.warmup_steps >= 0),
        ("lr_floor", cfg.lr_floor, "a number in [0, 1]", 0 <= cfg.lr_floor <= 1),
        ("grad_clip", cfg.grad_clip, "a number >= 0", math.isfinite(cfg.grad_clip) and cfg.grad_clip >= 0),
        ("workers", cfg.workers, ">= 0", cfg.workers >= 0),
        ("ckpt_every", cfg.ckpt_every, ">= 0", cfg.ckpt_every >= 0),
        ("log_every", cfg.log_every, ">= 1", cfg.log_every >= 1),
        ("max_steps", cfg.max_steps, ">= 0", cfg.max_steps >= 0)) if not ok]
    if bad:
        name, value, want = bad[0]
        raise PacxError(f"--{name}: expected {want}, got {value}")
    unknown = sorted(set(cfg.allow_changes) - {f.name for f in fields(cfg)})
    if unknown:
        raise PacxError(f"--allow_changes: {unknown[0]!r} is not an option of this script")


def prepare_run_dir(cfg: TrainConfig, rt: Runtime) -> Path | None:
    """Check the options, take --out_dir's lock (rank 0) and apply the folder rules of `pacx.rundir`, reading only:
    nothing is written or removed here. Every rank then passes a barrier, so none writes into --out_dir before all
    have looked at what was there. Returns the checkpoint to resume from (or None)."""
    check_options(cfg)
    out = Path(cfg.out_dir)
    if rt.is_main:
        rundir.lock(out)
    if rt.distributed:
        dist.barrier()
    previous = [out / name for name in (ckpt.LAST, "metrics.jsonl", "config.json") if (out / name).exists()]
    resume_from = rundir.check(out, previous, cfg.resume, cfg.overwrite,
                               out / ckpt.LAST if (out / ckpt.LAST).exists() else None)
    if rt.distributed:
        dist.barrier()
    return resume_from


def accumulate(train_model: torch.nn.Module, rt: Runtime, batch: list[torch.Tensor], n: int,
               loss_of: Callable[[list[torch.Tensor], float], torch.Tensor]) -> torch.Tensor:
    """Forward and backward over `n` micro-batches of `batch` (gradient accumulation: the same update with 1/n of the
    activation memory); under DDP only the last one all-reduces (`no_sync` on the others). `loss_of(micro, weight)`
    is the micro-batch's share of the batch loss (`weight`: its share of the samples). Returns the detached batch
    loss."""
    parts = micro_batches(batch, n)
    loss = 0.0
    for i, (micro, weight) in enumerate(parts):
        with sync_gradients(train_model, sync=i == len(parts) - 1):
            with rt.autocast():
                part = loss_of(micro, weight)
            part.backward()
        loss = loss + part.detach()
    return loss


class Run:
    """The books of one training run in `cfg.out_dir` (see the module docstring)."""

    def __init__(self, cfg: TrainConfig, rt: Runtime, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 sampler: GlobalBatchSampler, model_config: dict, resume_from: Path | None,
                 on_save: Callable[[], None] | None = None, show: tuple[str, ...] | None = None,
                 unit: str = "img"):
        self.cfg, self.rt, self.model, self.optimizer, self.sampler = cfg, rt, model, optimizer, sampler
        self.model_config, self.on_save, self.show = model_config, on_save, show
        self.out = Path(cfg.out_dir)
        self.steps_per_epoch = sampler.steps_per_epoch
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.warmup = cfg.warmup_steps / self.steps_per_epoch if cfg.warmup_steps else cfg.warmup_epochs
        self.counters = {"skipped": 0}  # steps skipped under --skip_nonfinite; saved, so they survive a resume
        self.step = self.start(resume_from)
        self.log = JsonlLog(self.out / "metrics.jsonl", rt.is_main, resume_step=self.step if resume_from else None)
        if rt.is_main:
            (self.out / "config.json").write_text(json.dumps({"script": asdict(cfg), "model": model_config},
                                                             indent=2))
        if self.warmup >= cfg.epochs:
            rt.print0(f"warning: the warmup ({self.warmup:g} epochs) is as long as the training ({cfg.epochs} "
                      f"epochs): the learning rate never reaches --lr {cfg.lr:g}; shorten --warmup_epochs / "
                      f"--warmup_steps")
        self.progress = Progress(self.total_steps, start_step=self.step, unit=unit)  # unit: what a sample is
        self.meter = LossMeter()
        self.epoch = self.step // self.steps_per_epoch

    def start(self, resume_from: Path | None) -> int:
        """Restore the run in `resume_from` (model, optimizer, RNGs, counters) after checking it is this run, or
        remove a replaced run's files (--overwrite, now that the inputs have been read). Returns the step."""
        if resume_from is None:
            if self.cfg.overwrite and self.rt.is_main:
                rundir.clear([self.out / name for name in RUN_FILES])
            return 0
        state = ckpt.load(resume_from)
        kind, saved_kind = self.model_config.get("kind"), (state.get("config") or {}).get("kind")
        if kind != saved_kind:
            raise PacxError(f"{resume_from}: holds a run of another model ({saved_kind}, this script trains {kind}); "
                            f"choose another --out_dir")
        rundir.check_resume(resume_from, state.get("script_config", {}), asdict(self.cfg), self.cfg.allow_changes)
        step = ckpt.restore_training_state(state, self.model, self.optimizer, self.counters)
        self.rt.print0(f"resumed {resume_from} at step {step}")
        return step

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
                           **({"skipped": self.counters["skipped"]} if cfg.skip_nonfinite else {}))
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
