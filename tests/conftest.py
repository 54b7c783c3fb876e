"""Shared test setup: the repo root on sys.path (also for spawned processes) and the real sample files."""
import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "samples"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)


def kill_after_checkpoint(proc, last_path: Path, step: int, timeout: float = 120) -> None:
    """SIGKILL a training process once its checkpoint `last_path` holds `step` or more (or it has ended)."""
    from pacx.checkpoint import load

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if last_path.exists() and load(last_path)["step"] >= step:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
