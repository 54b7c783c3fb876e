"""Crash safety of evaluate.py's fine-tuning (issue 8), against an uninterrupted run as the reference.

- `pacx.eval.finetune.finetune` stopped after step k (every step of a 3-epoch run but the last: mid-epoch and at epoch
  ends) and resumed from its checkpoint ends with the weights and history of a run never stopped and never
  checkpointed; in LoRA mode the adapters' dropout draws from the global torch RNG, so this also checks its restore.
- a real `python evaluate.py --mode finetune|lora` SIGKILLed at a step drawn from a seeded RNG, refused without
  --resume, then resumed, writes a byte-identical results.json / results.md and bit-identical run files (best
  weights, validation / test probabilities, history); the run that had finished is not trained again.
- a folder holding an evaluation is refused without --resume / --overwrite and left byte-identical; --overwrite
  replaces only what evaluate.py wrote; a run file written with other options is refused, not mixed in.
"""
import os
import re
import subprocess
import sys
from dataclasses import replace
from functools import partial

import numpy as np
import pytest
import torch

import evaluate
from conftest import ROOT, SLOW_SAVES, kill_after_checkpoint
from pacx.checkpoint import load
from pacx.errors import PacxError
from pacx.eval.finetune import finetune, prepare_finetune, resume_state
from pacx.eval.probe import ProbeConfig, image_label_sample, row_loader
from pacx.models.vit import VisionTransformer, vit_tiny
from test_evaluate import write_png_data

DEV = torch.device("cpu")
SCRIPT = str(ROOT / "evaluate.py")
TINY = ["--backbones", "a=", "--model", "tiny", "--img_size", "32", "--device", "cpu", "--workers", "0",
        "--batch_size", "4", "--bootstrap", "30", "--label_columns", "finding", "--task_type", "binary",
        "--finetune_epochs", "4", "--finetune_lr", "1e-2", "--backbone_lr_scale", "1", "--log_every", "1"]


class Crash(Exception):
    pass


def toy_set(n, seed):
    """Items as ImageCSV gives them: a [0, 1] image (3, 32, 32); label 1 = a faint square."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.2 * torch.rand(n, 3, 32, 32, generator=g)
    y = (torch.arange(n) % 2).float()
    x[y == 1, :, 4:14, 8:20] += 0.15
    return [{"image": x[i], "label": y[i:i + 1]} for i in range(n)]


TRAIN, VAL = toy_set(16, 0), toy_set(8, 1)
Y_VAL = np.array([[item["label"].item()] for item in VAL])


def train_loader(epoch, start):  # shuffled by (0, epoch), flipped at random: the data path evaluate.py uses
    return row_loader(TRAIN, partial(image_label_sample, size=32, train=True), range(16), 4, shuffle=True, seed=0,
                      epoch=epoch, start=start)


def crashing(at_step):
    """`train_loader` that raises once `at_step` batches have been trained on."""
    served = [0]

    class Epoch:
        def __init__(self, loader):
            self.loader = loader

        def __len__(self):
            return len(self.loader)

        def __iter__(self):
            for batch in self.loader:
                if served[0] == at_step:
                    raise Crash
                served[0] += 1
                yield batch

    return lambda epoch, start: Epoch(train_loader(epoch, start))


def make_model(mode):
    torch.manual_seed(0)
    return prepare_finetune(VisionTransformer(vit_tiny(img_size=32)), 1, mode, seed=0)


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread, and do not stall when other jobs share the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("mode", ["finetune", "lora"])
def test_finetune_resumed_after_any_step_is_bit_identical(tmp_path, mode, one_thread):
    val = row_loader(VAL, partial(image_label_sample, size=32), range(8), 8)
    cfg = ProbeConfig(epochs=3, lr=1e-2, backbone_lr_scale=1.0, batch_size=4)  # 4 steps an epoch
    ref, ref_info = finetune(make_model(mode), train_loader, val, Y_VAL, "binary", cfg, DEV)  # no checkpoints
    ref_state = ref.state_dict()
    vals = [h["val_auroc"] for h in ref_info["history"]]
    assert len(set(vals)) > 1, vals  # the validation AUROC moves, so the best-epoch bookkeeping is exercised
    run = {"test": mode}
    for k in range(1, 12):
        path = tmp_path / f"{k}.pt"
        with pytest.raises(Crash):
            finetune(make_model(mode), crashing(k), val, Y_VAL, "binary", replace(cfg, ckpt_every=k), DEV, ckpt=path,
                     run=run)
        state = load(path)
        assert (state["step"], state["epoch"], state["batch"]) == (k, *divmod(k, 4)) and len(state["losses"]) == k % 4
        model, info = finetune(make_model(mode), train_loader, val, Y_VAL, "binary", replace(cfg, ckpt_every=k), DEV,
                               ckpt=path, resume=state, run=run)
        assert info == ref_info, k
        for name, v in model.state_dict().items():
            assert torch.equal(v, ref_state[name]), (k, name)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    write_png_data(root, disc=75)  # a faint disc: the validation AUROC moves between epochs
    return root


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # see `one_thread`


def run(args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=ROOT, env=ONE_THREAD)


def files(out):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("mode", ["finetune", "lora"])
def test_killed_evaluation_resumes_bit_identical(data, tmp_path, mode, capsys):
    out = tmp_path / "run"
    args = [*TINY, "--task_csv", str(data / "task.csv"), "--mode", mode, "--fractions", "0.5,1", "--ckpt_every", "1",
            "--out_dir", str(out)]
    ref = run(args)
    assert ref.returncode == 0, ref.stderr
    out.rename(tmp_path / "ref")  # the killed run then writes the same out_dir into results.json
    ref_files = files(tmp_path / "ref")

    # The 0.5 run (8 steps) finishes; the 1.0 run (16 steps, 4 an epoch) is killed after a random step of its first 14.
    kill_at = int(np.random.default_rng({"finetune": 1, "lora": 2}[mode]).integers(1, 15))
    proc = subprocess.Popen([sys.executable, SCRIPT, *args], cwd=ROOT, env={**ONE_THREAD, **SLOW_SAVES},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = out / "finetune" / "a_1.pt"
    kill_after_checkpoint(proc, last, kill_at)
    state = load(last)
    assert not state["finished"] and kill_at <= state["step"] < 16, (kill_at, state["step"])
    before = files(out)
    assert not (out / "results.json").exists() and load(out / "finetune" / "a_0.5.pt")["finished"]

    with pytest.raises(SystemExit) as e:  # in this process: the refusal comes before any work
        evaluate.main(args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "previous evaluation" in err and "--resume" in err
    assert files(out) == before

    resumed = run([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert "a 0.5 (8 train): finished before" in resumed.stdout and "a 0.5 (8 train): step" not in resumed.stdout
    assert f"resumed {last} at epoch {state['epoch']}, batch {state['batch']}" in resumed.stdout
    trained = [int(m) for m in re.findall(r"a 1 \(16 train\): step (\d+)/16 \| epoch \d+ \| loss", resumed.stdout)]
    assert trained == list(range(state["step"] + 1, 17))  # each remaining step once, none done before
    got = files(out)
    assert got.keys() == ref_files.keys()
    for name in ("results.json", "results.md"):
        assert got[name] == ref_files[name], name
    assert got["finetune/a_0.5.pt"] == before["finetune/a_0.5.pt"]  # not trained again
    for name in ("a_0.5.pt", "a_1.pt"):
        a, b = load(tmp_path / "ref" / "finetune" / name), load(out / "finetune" / name)
        assert a["info"] == b["info"] and a["run"] == b["run"], name
        for key in ("p_val", "p_test"):
            assert torch.equal(a[key], b[key]), (name, key)
        assert a["model"].keys() == b["model"].keys()
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), (name, k)


def test_folder_with_an_evaluation_is_refused_and_untouched(data, tmp_path, capsys):
    out = tmp_path / "eval"
    args = [*TINY, "--task_csv", str(data / "task.csv"), "--fractions", "1", "--probe_epochs", "2", "--out_dir",
            str(out)]
    evaluate.main(args)  # a linear probe: no run files, so --resume recomputes it
    (out / "notes.txt").write_text("mine")
    before = files(out)
    for extra in ([], ["--resume", "--overwrite"]):
        with pytest.raises(SystemExit) as e:
            evaluate.main([*args, *extra])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and len(err.splitlines()) == 1, err
        assert files(out) == before
    evaluate.main([*args, "--resume"])
    assert files(out) == before  # recomputed: the same results, byte for byte
    (out / "finetune").mkdir()
    (out / "finetune" / "a_1.pt").write_bytes(b"stale")
    evaluate.main([*args, "--overwrite", "--bootstrap", "40"])
    after = files(out)
    assert after["notes.txt"] == b"mine" and not (out / "finetune" / "a_1.pt").exists()
    assert after["results.json"] != before["results.json"]


def test_run_file_of_other_options_is_refused(tmp_path):
    path = tmp_path / "a_1.pt"
    torch.save({"run": {"backbone": "a", "lr": 0.01}, "finished": True}, path)
    assert resume_state(path, {"backbone": "a", "lr": 0.01})["finished"]
    with pytest.raises(PacxError, match=r"a_1.pt: written with lr = 0.01, this run has 0.001; .*--overwrite"):
        resume_state(path, {"backbone": "a", "lr": 0.001})
    assert resume_state(tmp_path / "none.pt", {}) is None
