"""Full and LoRA fine-tuning of a Classifier (backbone + Linear head on the CLS feature), with model selection on the
best validation AUROC, and the run files that make a fine-tuning run survive a kill.

Implements METHOD.md "Stage 3" (Classification) after the reference PaCX-MAE (Lyce24/PACX-MAE `Modules/cl_lit.py`,
`Stage3_CL.py`); the loss, optimizer groups, schedule and data path are those of `pacx.eval.probe`.
- full fine-tune: head lr 3e-4, backbone lr 0.1 x head lr, 40 epochs, no decay on biases / 1-D tensors / norms.
- LoRA fine-tune (not in the reference's Stage 3): adapters r 8 / alpha 16 / dropout 0.1 on qkv, fc1, fc2
  (pacx.models.lora)
  plus the final LayerNorm train at the backbone lr; the rest of the backbone stays frozen.

Crash safety (one file per run, `run_file`: out_dir/finetune/<backbone>_<fraction>.pt, written atomically by
`pacx.checkpoint.save_atomic`, so a kill during a write leaves the previous one loadable). At the end of every epoch
and every `ckpt_every` steps it holds the trainable weights, the optimizer, the position (epoch, batches done in it),
the epoch's losses so far, the best epoch with its weights, the history and every RNG (LoRA dropout draws from the
global torch RNG). Batch order and augmentation come from (seed, epoch) (`pacx.eval.probe.row_loader`), so a resumed run
skips the batches it already trained on and ends bit-identical to a run never stopped. The frozen rest of the model is
not saved: the backbone checkpoint and the seed rebuild it. A finished run's file keeps the best weights and the
validation / test probabilities, so a resumed evaluation takes its outputs from there instead of training again.

Notation: B = batch, D = feature width, C = outputs (binary 1, multilabel C, multiclass K).
"""
import contextlib
import math
import re
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn as nn

from pacx import rundir
from pacx.checkpoint import load, rng_state, save_atomic, set_rng_state
from pacx.errors import PacxError
from pacx.loader import check_batch
from pacx.models.lora import inject_lora, mark_trainable
from pacx.eval.metrics import macro_auroc
from pacx.eval.probe import ProbeConfig, classification_loss, is_better, set_epoch_lr, to_probabilities
from pacx.optim import make_adamw, param_groups
from pacx.runlog import Progress

RUNS = "finetune"  # the folder of run files inside evaluate.py's out_dir
RESULTS = ("results.json", "results.md")


class Classifier(nn.Module):
    """backbone (images -> CLS feature (B, D)) followed by the Linear head."""

    def __init__(self, backbone: nn.Module, num_outputs: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.cfg.embed_dim, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))  # (B, C)


def prepare_finetune(backbone: nn.Module, num_out: int, mode: str, seed: int = 0,
                     head_only: bool = False) -> Classifier:
    """A Classifier whose trainable parameters are those of `mode`: "finetune" (all; a fixed sin-cos position table
    stays frozen, a learned one trains) or "lora" (adapters + final norm + head). `head_only` freezes the backbone
    under "finetune": the original's fine-tuning of a Stage-2 backbone (METHOD.md "Found by running the original":
    peft's frozen base weights stay frozen after `merge_and_unload`, and its optimizer skips them)."""
    if mode == "lora":
        inject_lora(backbone)
        mark_trainable(backbone, "lora")
    elif mode != "finetune":
        raise ValueError(f"prepare_finetune: mode must be finetune or lora, found {mode!r}")
    elif head_only:
        backbone.requires_grad_(False)
    torch.manual_seed(seed)
    return Classifier(backbone, num_out)


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable, task: str, device: torch.device,
            autocast: Callable = contextlib.nullcontext) -> np.ndarray:
    """Probabilities (N, C) of `model` over batches `(x, ...)`."""
    model.eval()
    out = []
    for batch in loader:
        x = check_batch(batch)[0].to(device, non_blocking=True)
        with autocast():
            out.append(model(x).float())
    return to_probabilities(torch.cat(out), task)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of the trainable parameters: all a run file needs (the frozen rest is rebuilt, not saved)."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: nn.Module, state: dict, path) -> None:
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(state) != expected:
        odd = sorted(set(state) ^ expected)[0]
        raise PacxError(f"{path}: its weights do not fit this model (parameter {odd!r}); resume with the options "
                        f"that wrote it or pass --overwrite")
    model.load_state_dict(state, strict=False)  # strict=False: the frozen parameters are not in the file


def run_file(out_dir, backbone: str, fraction: float) -> Path:
    return Path(out_dir) / RUNS / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', backbone)}_{fraction:g}.pt"


def previous_evaluation(out: Path) -> list[Path]:
    """The files an earlier evaluate.py left in `out`: results, fine-tuning run files (also interrupted *.pt.tmp)
    and rollout figures."""
    found = [out / name for name in RESULTS if (out / name).exists()]
    found += sorted((out / RUNS).glob("*.pt*")) if (out / RUNS).is_dir() else []
    return found + (sorted((out / "rollout").glob("[0-9][0-9][0-9].png")) if (out / "rollout").is_dir() else [])


def prepare_eval_dir(out_dir, resume: bool, overwrite: bool) -> Path:
    """Take evaluate.py's folder (`pacx.rundir`: its lock, then the refusal rules). One that holds a previous
    evaluation is refused unless --resume (continue: finished runs are reused, unfinished ones go on) or --overwrite
    (start again: the previous files are removed once the inputs are read, `pacx.rundir.clear`). Reads only."""
    out = Path(out_dir)
    rundir.lock(out)
    previous = previous_evaluation(out)
    rundir.check(out, previous, resume, overwrite, out if previous else None, what="evaluation")
    return out


def resume_state(path: Path, run: dict) -> dict | None:
    """What the run file `path` holds (None: no file), refused when it was written with other options: continuing
    it would mix two different runs."""
    if not path.exists():
        return None
    state = load(path)
    old = state.get("run", {})
    for key in sorted(set(old) | set(run)):
        if old.get(key) != run.get(key):
            raise PacxError(f"{path}: written with {key} = {old.get(key)!r}, this run has {run.get(key)!r}; resume "
                            f"with the same options or pass --overwrite")
    return state


def finetune(model: Classifier, train_loader: Callable[[int, int], Iterable], val_loader: Iterable,
             y_val: np.ndarray, task: str, cfg: ProbeConfig, device: torch.device,
             autocast: Callable = contextlib.nullcontext, log: Callable | None = None, ckpt: Path | None = None,
             resume: dict | None = None, run: dict | None = None) -> tuple[Classifier, dict]:
    """Train the trainable parameters of `model` (see `prepare_finetune`); `train_loader(epoch, start)` yields the
    (x, y) batches of `epoch` from batch `start` on. The head trains at cfg.lr, the backbone at
    cfg.lr * cfg.backbone_lr_scale. With `ckpt`, the training state (tagged with `run`) is saved there at the end of
    every epoch and every cfg.ckpt_every steps; `resume` (a state read from it) continues where it stopped.
    Returns the model with the weights of the best validation-AUROC epoch and a summary."""
    model.to(device)
    groups = (param_groups(model.backbone, cfg.weight_decay, lr_scale=cfg.backbone_lr_scale)
              + param_groups(model.head, cfg.weight_decay))
    optimizer = make_adamw(groups, cfg.lr)
    steps_per_epoch = len(train_loader(0, 0))
    epoch, done, losses, history = 0, 0, [], []
    best = {"epoch": -1, "val_auroc": float("nan"), "state": None}
    if resume is not None:
        load_trainable(model, resume["model"], ckpt)
        optimizer.load_state_dict(resume["optimizer"])
        epoch, done, losses, history, best = (resume[k] for k in ("epoch", "batch", "losses", "history", "best"))
        set_rng_state(resume["rng"])
        if log is not None:
            log(f"resumed {ckpt} at epoch {epoch}, batch {done}")
    step = epoch * steps_per_epoch + done

    def save(epoch: int, done: int, losses: list) -> None:
        if ckpt is not None:
            save_atomic({"run": run, "finished": False, "step": step, "epoch": epoch, "batch": done,
                         "losses": losses, "history": history, "best": best, "model": trainable_state(model),
                         "optimizer": optimizer.state_dict(), "rng": rng_state()}, ckpt)

    progress = Progress(cfg.epochs * steps_per_epoch, start_step=step)
    while epoch < cfg.epochs:
        set_epoch_lr(optimizer, epoch, cfg)
        model.train()
        for batch in train_loader(epoch, done):
            x, y = (t.to(device, non_blocking=True) for t in check_batch(batch)[:2])
            with autocast():
                logits = model(x)  # (B, C)
            loss = classification_loss(logits, y, task)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):  # never checkpoint a diverged model
                raise PacxError(f"non-finite loss at step {step + 1} (epoch {epoch}); stopped"
                                + (f", the last good state is {ckpt}" if ckpt is not None else ""))
            step, done = step + 1, done + 1
            progress.update(len(x))
            if log is not None and step % cfg.log_every == 0:
                log(progress.line(step, epoch=epoch, loss=float(np.mean(losses))))
            if cfg.ckpt_every and step % cfg.ckpt_every == 0:
                save(epoch, done, losses)
        val_auroc = macro_auroc(y_val, predict(model, val_loader, task, device, autocast), task)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"),
                        "val_auroc": val_auroc})
        if log is not None:
            log(progress.line(step, epoch=epoch, val_auroc=val_auroc))
        if is_better(val_auroc, best["val_auroc"]) or best["epoch"] < 0:
            best = {"epoch": epoch, "val_auroc": val_auroc, "state": trainable_state(model)}
        epoch, done, losses = epoch + 1, 0, []
        save(epoch, done, losses)
    load_trainable(model, best["state"], ckpt)
    model.eval()
    return model, {"best_epoch": best["epoch"], "best_val_auroc": best["val_auroc"], "history": history,
                   "steps": step}


def finetune_run(path: Path, run: dict, resume: bool, make_model: Callable[[], Classifier],
                 train_loader: Callable[[int, int], Iterable], val_loader: Iterable, test_loader: Iterable,
                 y_val: np.ndarray, task: str, cfg: ProbeConfig, device: torch.device,
                 autocast: Callable = contextlib.nullcontext,
                 log: Callable = print) -> tuple[np.ndarray, np.ndarray, dict]:
    """One resumable fine-tuning run of evaluate.py: train (or, with `resume`, continue) the model `make_model()`
    builds, predict validation and test, and keep the outputs with the best weights in the run file `path`.
    A run whose file says it finished is not trained again. Returns (p_val, p_test, summary)."""
    state = resume_state(path, run) if resume else None
    if state is not None and state["finished"]:
        log(f"finished before: outputs from {path}")
        return state["p_val"].numpy(), state["p_test"].numpy(), state["info"]
    path.parent.mkdir(parents=True, exist_ok=True)
    model, info = finetune(make_model(), train_loader, val_loader, y_val, task, cfg, device, autocast, log, path,
                           state, run)
    p_val, p_test = (predict(model, loader, task, device, autocast) for loader in (val_loader, test_loader))
    save_atomic({"run": run, "finished": True, "step": info["steps"], "model": trainable_state(model), "info": info,
                 "p_val": torch.from_numpy(p_val), "p_test": torch.from_numpy(p_test)}, path)
    return p_val, p_test, info
