"""An output folder's rules, shared by every script that writes one (the training scripts and evaluate.py).

Nothing a user has in a folder is deleted, overwritten or mixed with another run's files by accident:
- one run at a time: `lock` holds an exclusive lock on `<out>/.lock` (`fcntl.flock`) until the script's `main` ends
  (`release`, which `pacx.errors.exit_on_error` runs). A second run on the same folder is refused; the kernel drops
  the lock when its process dies, so a killed run never leaves the folder stuck (the empty `.lock` file stays,
  harmless, and is never written to);
- a folder holding a previous run is refused unless the user says `--resume` (continue it) or `--overwrite` (replace
  it) (`check`);
- with `--overwrite`, the previous run's files are removed (`clear`) only once the new run's inputs have been read and
  checked, so a typo in a command line never costs the old run;
- `--resume` continues only the same run: same script (model kind) and the same options, except those that do not
  change what is computed (`check_resume`); `--allow_changes a,b` accepts named differences.
"""
import fcntl
from pathlib import Path

from pacx.errors import CLEANUPS, PacxError

LOCK = ".lock"
# Options that change how a run is carried out, not what it computes: they may differ on --resume.
OPERATIONAL = ("resume", "overwrite", "allow_changes", "workers", "device", "amp", "compile", "log_every",
               "ckpt_every", "max_steps", "skip_nonfinite")
_held = {}  # folder -> its open lock file, for this process (a lock lives as long as its file stays open)


def lock(out: Path) -> None:
    """Create `out` if needed and take its lock, or refuse: another live run holds it."""
    if out.exists() and not out.is_dir():
        raise PacxError(f"{out}: exists and is not a folder; choose another --out_dir")
    out.mkdir(parents=True, exist_ok=True)
    key = str(out.resolve())
    if key in _held:
        return
    f = open(out / LOCK, "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise PacxError(f"{out}: another run is writing in this folder (it holds {out / LOCK}); wait for it to end "
                        f"or choose another --out_dir") from None
    _held[key] = f
    if release not in CLEANUPS:
        CLEANUPS.append(release)


def release() -> None:
    """Drop every lock this process holds (the end of a script's main)."""
    while _held:
        _held.popitem()[1].close()


def check(out: Path, previous: list[Path], resume: bool, overwrite: bool, resumable: Path | None,
          what: str = "run") -> Path | None:
    """The refusal rules. `previous`: the files of an earlier run found in `out`; `resumable`: the checkpoint a resume
    continues from (None: there is none). Returns the checkpoint to resume from, or None for a fresh start."""
    if resume and overwrite:
        raise PacxError("--resume and --overwrite contradict each other: pass one of them")
    if resume and resumable is not None:
        return resumable
    if resume and previous:
        raise PacxError(f"{out}: --resume given but there is nothing to resume from (the run stopped before its "
                        f"first checkpoint); pass --overwrite to start again")
    if previous and not overwrite:
        raise PacxError(f"{out}: holds a previous {what} ({previous[0].relative_to(out)}); pass --resume to continue "
                        f"it or --overwrite to replace it")
    return None


def clear(files: list[Path]) -> None:
    """Remove a replaced run's files (called once the new run's inputs are known good)."""
    for f in files:
        f.unlink(missing_ok=True)


def check_resume(source, saved: dict, current: dict, allow: tuple[str, ...]) -> None:
    """Refuse to continue a run with options it was not started with: the schedule, data or model would change under
    it silently (a bigger batch moves the step count's epoch, say). `saved` / `current`: the two runs' options."""
    for key in sorted(set(saved) | set(current)):
        if key in OPERATIONAL or key in allow:
            continue
        old, new = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if old != new:
            raise PacxError(f"{source}: this run was started with --{key} {_show(old)}, this command gives --{key} "
                            f"{_show(new)}; resume with the same value, or pass --allow_changes {key} to continue "
                            f"with the new one")


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "''"
    return str(value) if value != "" else "''"
