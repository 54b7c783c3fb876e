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
# Under pytest-xdist (README: `pytest -n 2`) each worker takes one thread unless OMP_NUM_THREADS says otherwise: two
# workers on two cores, not four spinning threads (measured: 4.0 instead of 4.7 minutes for the suite on 2 cores).
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"  # the scripts the tests start inherit it
    torch.set_num_threads(1)
# For a run a test SIGKILLs after a given checkpoint step: each checkpoint write pauses the run (tests/slow_saves).
SLOW_SAVES = {"PYTHONPATH": os.pathsep.join((str(ROOT / "tests" / "slow_saves"), os.environ["PYTHONPATH"]))}


def kill_after_checkpoint(proc, last_path: Path, step: int, timeout: float = 120) -> None:
    """SIGKILL a training process once its checkpoint `last_path` holds `step` or more (or it has ended). Start the
    process with `SLOW_SAVES` in its environment, so the kill lands before the next step on a busy machine too."""
    from pacx.checkpoint import load

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if last_path.exists() and load(last_path)["step"] >= step:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def run_script(script: str, args: list[str], env: dict | None = None, timeout: float | None = None):
    """`python <script> <args>` from the repo root, output captured."""
    import subprocess

    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def torchrun_script(script: str, args: list[str], timeout: float = 300, nproc: int = 2):
    """`<script>` under torchrun with `nproc` gloo processes of one thread each (`--standalone`: a free port, so
    runs at the same time never collide)."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
         str(ROOT / script), *args],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=timeout)


def assert_same_training(one: Path, two: Path, start: dict, lr: float, loss_keys=("loss",)) -> None:
    """Two runs of the same training (1 vs 2 processes, accumulation) agree, compared where rounding is not amplified.

    The logged loss of every step to rtol 1e-4: the first step sees the same weights (only reduction order differs),
    later ones weights that differ only where Adam turned rounding noise into a step, i.e. on elements whose gradient
    is near 0 (the key bias of attention has an exactly-zero true gradient), which moves the loss at second order.
    Every trained element within Adam's bound of 2 lr per step (a changed rule moves most elements by about lr),
    and the median element to rounding (1e-6). `start`: the weights before training, to find the trained ones.
    """
    import json

    import torch

    from pacx.checkpoint import LAST, load

    logs = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if '"lr"' in line]
            for d in (one, two)]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]] and logs[0]
    for r1, r2 in zip(*logs):
        for key in loss_keys:
            assert abs(r1[key] - r2[key]) <= 1e-4 * abs(r1[key]), (r1["step"], key, r1[key], r2[key])
    a, b = load(one / LAST)["model"], load(two / LAST)["model"]
    assert a.keys() == b.keys()
    trained = [k for k in a if k not in start or not torch.equal(a[k], start[k])]
    assert trained, "nothing trained"
    diff = torch.cat([(a[k].double() - b[k].double()).abs().reshape(-1) for k in trained])
    steps = logs[0][-1]["step"]
    assert diff.max() <= 2 * steps * lr, (diff.max(), 2 * steps * lr)
    assert diff.median() <= 1e-6, diff.median()


def kill_and_resume(script: str, common: list[str], tmp_path: Path, total_steps: int, kill_after: int) -> None:
    """Run `common` to the end in ref/, and in killed/ SIGKILLed once its checkpoint holds step `kill_after`, then
    resumed; assert the two end bit-identical (weights and optimizer state) and the log holds every step once."""
    import subprocess

    import torch

    from pacx.checkpoint import LAST, load
    from pacx.runlog import read_jsonl

    ref = run_script(script, [*common, "--out_dir", str(tmp_path / "ref")])
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(ROOT / script), *common, "--out_dir", str(out)], cwd=ROOT,
                            env={**os.environ, **SLOW_SAVES}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_after_checkpoint(proc, out / LAST, kill_after)
    killed_at = load(out / LAST)["step"]
    assert killed_at < total_steps, "the run finished before it could be killed"
    refused = run_script(script, [*common, "--out_dir", str(out)])  # a folder holding a run is not silently reused
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = run_script(script, [*common, "--out_dir", str(out), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert f"at step {killed_at}" in resumed.stdout
    a, b = load(tmp_path / "ref" / LAST), load(out / LAST)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for s_a, s_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(s_a[k], s_b[k]) for k in s_a)
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl") if "lr" in r] == list(range(1, total_steps + 1))


def why(res) -> str:
    """What a failed command said: its error lines (every rank's), else the end of its stderr."""
    lines = [line for line in res.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    return "\n".join(lines[:20]) or res.stderr[-3000:]
