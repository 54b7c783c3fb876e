"""Checkpoint writes are atomic: a write that dies half-way leaves the previous checkpoint intact and loadable."""
import signal
import subprocess
import sys
import time

import torch

from conftest import ROOT
from pacx.checkpoint import load, save_atomic

WRITER = """
import sys, torch
sys.path.insert(0, {root!r})
from pacx.checkpoint import save_atomic
big = {{"model": {{"w": torch.randn(64, 1024, 1024)}}, "step": 2}}   # 256 MB: the write takes a while
print("writing", flush=True)
save_atomic(big, {path!r})
"""


def test_kill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    path = tmp_path / "last.pt"
    save_atomic({"model": {"w": torch.ones(3)}, "step": 1}, path)
    proc = subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(ROOT), path=str(path))],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    tmp = path.with_name(path.name + ".tmp")
    deadline = time.time() + 60
    while not tmp.exists() and time.time() < deadline:  # kill once the temp file is being written
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and tmp.exists()  # killed mid-write, the partial file left behind
    state = load(path)
    assert state["step"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))
