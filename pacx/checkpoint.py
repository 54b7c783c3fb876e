"""Checkpoints: atomic writes, safe loads, RNG state, and the rules for an output folder.

A checkpoint is a plain dict of tensors and Python primitives: `model` (the unwrapped module's state dict, no
`module.`/`_orig_mod.` prefixes), `optimizer`, `epoch`, `step`, `rng`, `config` (a dict that rebuilds the model) and
whatever the script adds. It is written to `<name>.tmp` and renamed over the old file, so a kill during the write
leaves the previous checkpoint intact. Every load uses `torch.load(..., weights_only=True)`: a checkpoint carrying a
pickled payload is refused without running it.
"""
import os
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

from pacx.errors import PacxError

LAST = "last.pt"


def save_atomic(obj: dict, path: str | os.PathLike) -> None:
    """Write `obj` to `<path>.tmp`, then rename it over `path`: readers (and a resumed run) see the old file or the
    new one, never half of one. A failed write (disk full, a read-only folder) removes the temp file and says so in
    one line; the previous file is untouched."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError from its zip writer
        tmp.unlink(missing_ok=True)
        detail = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip().splitlines()[0]
        raise PacxError(f"{path}: could not be written ({detail}); the previous file, if any, is intact") from None


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint (a dict) safely; a one-line error for a missing, truncated, unsafe or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise PacxError(f"{path}: checkpoint not found" + (" (a folder)" if path.is_dir() else ""))
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle refusals, truncated zip files, ...: all unusable for the same reason
        if isinstance(e, pickle.UnpicklingError) and "Weights only load failed" in str(e):
            # Torch's message advises weights_only=False, which would run the file's code: name only the object.
            found = re.search(r"(?:GLOBAL|global:?) ([\w.]+)", str(e))
            what = f" ({found.group(1)})" if found else ""
            reason = f"it holds Python objects beyond tensors and plain containers{what}; refused, since building " \
                     f"them could run code"
        else:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            reason = f"not a PyTorch checkpoint file ({type(e).__name__}: {first})"
        raise PacxError(f"{path}: not a loadable checkpoint: {reason}") from None
    if not isinstance(obj, dict):
        raise PacxError(f"{path}: not a pacx checkpoint: expected a dict of tensors and settings, found "
                        f"{type(obj).__name__}")
    return obj


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


def restore_training_state(state: dict, model: torch.nn.Module, optimizer, counters: dict | None = None) -> int:
    """Put what `save_training_state` wrote (`state`, read by `load`) into `model` and `optimizer`, restore the RNGs
    and (into `counters`) the run's saved counters, return the step."""
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    if counters is not None:
        counters.update(state.get("counters", {}))
    return state["step"]
