"""Checkpoints: atomic writes, safe loads, RNG state, and the rules for an output folder.

A checkpoint is a plain dict of tensors and Python primitives: `model` (the unwrapped module's state dict, no
`module.`/`_orig_mod.` prefixes), `optimizer`, `epoch`, `step`, `rng`, `config` (a dict that rebuilds the model) and
whatever the script adds. It is written to `<name>.tmp` and renamed over the old file, so a kill during the write
leaves the previous checkpoint intact. Every load uses `torch.load(..., weights_only=True)`: a checkpoint carrying a
pickled payload is refused without running it.
"""
import os
import random
from pathlib import Path

import numpy as np
import torch

from pacx.errors import PacxError

LAST = "last.pt"


def save_atomic(obj: dict, path: str | os.PathLike) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one, never half of one


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint safely; a one-line error for a missing, truncated or unsafe file."""
    path = Path(path)
    if not path.is_file():
        raise PacxError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle refusals, truncated zip files, ...: all unusable for the same reason
        text = str(e)
        if "WeightsUnpickler error:" in text:  # torch's own advice (weights_only=False) would run the file's code
            detail = text.split("WeightsUnpickler error:")[1].strip().splitlines()[0]
            reason = f"it holds Python objects beyond tensors and plain containers ({detail}); refused, since " \
                     f"building them could run code"
        else:
            first = text.strip().splitlines()[0] if text.strip() else ""
            reason = f"not a PyTorch checkpoint file ({type(e).__name__}: {first})"
        raise PacxError(f"{path}: not a loadable checkpoint: {reason}") from None


def rng_state() -> dict:
    """Every RNG the training loop touches, in weights_only-loadable form."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def prepare_out_dir(out_dir: str | os.PathLike, resume: bool, overwrite: bool) -> Path | None:
    """Create the run folder and return the checkpoint to resume from (or None).

    A folder that already holds a run is refused unless `--resume` (continue it) or `--overwrite` (start again; the
    old checkpoint and log are replaced) says what to do with it.
    """
    out = Path(out_dir)
    last = out / LAST
    # A run killed before its first checkpoint leaves its log and config: still a run whose files must not vanish.
    found = [p for p in (last, out / "metrics.jsonl", out / "config.json") if p.exists()]
    if resume and last.exists():
        return last
    if resume and found:
        raise PacxError(f"{out}: --resume given but there is no {LAST} to resume from (the run stopped before its "
                        f"first checkpoint); pass --overwrite to start again")
    if found and not overwrite:
        raise PacxError(f"{out}: holds a previous run ({found[0].name}); pass --resume to continue it or "
                        f"--overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    return None


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP and/or torch.compile wrappers."""
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_training_state(path, model: torch.nn.Module, optimizer, step: int, steps_per_epoch: int, **extra) -> None:
    """The resumable state of a training script: model, optimizer, step (and epoch), every RNG, plus `extra`
    (the model config that rebuilds the model, the script config)."""
    save_atomic({"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                 "epoch": step // steps_per_epoch, "rng": rng_state(), **extra}, path)


def restore_training_state(path, model: torch.nn.Module, optimizer, counters: dict | None = None) -> int:
    """Load what `save_training_state` wrote into `model` and `optimizer`, restore the RNGs and (into `counters`)
    the run's saved counters, return the step."""
    state = load(path)
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    if counters is not None:
        counters.update(state.get("counters", {}))
    return state["step"]
