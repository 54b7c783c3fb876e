"""The metrics log (one JSON object per line) and the progress line with throughput and ETA.

Only rank 0 writes. On resume the log is cut back to the checkpoint's step, so the file never holds the same step
twice (lines written after the last checkpoint by a killed run are replayed by the resumed one).
"""
import json
import math
import os
import time
from pathlib import Path

import torch

from pacx.errors import PacxError


class JsonlLog:
    def __init__(self, path: str | os.PathLike, enabled: bool = True, resume_step: int | None = None):
        self.path, self.enabled = Path(path), enabled
        if not enabled:
            return
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [line for line in self._records() if json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))

    def _records(self) -> list[str]:
        """The log's lines; a last line cut short (the run was killed while writing it) is dropped, any other line
        that is not JSON is an error naming it."""
        lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        for i, line in enumerate(lines):
            try:
                json.loads(line)
            except ValueError:
                if i == len(lines) - 1:
                    return lines[:-1]
                raise PacxError(f"{self.path}: line {i + 1} is not a JSON record; repair or remove it") from None
        return lines

    def write(self, **record) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record, allow_nan=True) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """Tracks steps done out of `total` and formats `step 120/4000 | loss 0.71 | ... | 52.1 img/s | ETA 1:02:11`.

    Throughput and ETA use the wall time since this process started stepping, so a resumed run's ETA is honest.
    `unit`: what a sample is, for the throughput ("img", "patients").
    """

    def __init__(self, total_steps: int, start_step: int = 0, unit: str = "img"):
        self.total, self.start_step, self.unit = total_steps, start_step, unit
        self.t0 = time.perf_counter()
        self.samples = 0

    def update(self, samples: int) -> None:
        self.samples += samples

    def line(self, step: int, **values) -> str:
        elapsed = time.perf_counter() - self.t0
        done = step - self.start_step
        rate = self.samples / elapsed if elapsed > 0 else float("nan")
        eta = elapsed / done * (self.total - step) if done > 0 else float("nan")
        parts = [f"step {step}/{self.total}"]
        for k, v in values.items():
            parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
        parts += [f"{rate:.1f} {self.unit}/s", f"ETA {_fmt_seconds(eta)}"]
        return " | ".join(parts)

    def images_per_second(self) -> float:
        elapsed = time.perf_counter() - self.t0
        return self.samples / elapsed if elapsed > 0 else float("nan")


class LossMeter:
    """Sums loss terms on the device between log lines, so a training step never waits for the host."""

    def __init__(self):
        self.sums, self.count = {}, 0

    def add(self, parts: dict) -> None:
        for k, v in parts.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += 1

    def check_finite(self, step: int, last_good, params=()) -> None:
        """Stop the run on a NaN/Inf loss since the last `means()` (it stays visible in the sums) or, when given, a
        non-finite parameter (a NaN gradient under a finite loss); one host sync. Called before every log line and
        checkpoint (with the parameters), so a non-finite state is never saved."""
        flags = [torch.isfinite(v).all() for v in self.sums.values()]
        if flags and not bool(torch.stack(flags).all()):
            raise PacxError(f"non-finite loss in the steps before step {step}; stopped, the last good state is "
                            f"{last_good}")
        params = [p.detach() for p in params]
        if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            raise PacxError(f"non-finite weights at step {step} (a NaN/Inf gradient); stopped, the last good state "
                            f"is {last_good}")

    def means(self, reduce=lambda t: t) -> dict:
        """Mean of each term since the last call (`reduce`: e.g. the mean over ranks), then reset."""
        out = {k: reduce(v).item() / max(self.count, 1) for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        return out
