"""A fingerprint of a miniature demo run (checkpoint tensors, first logged losses, results.json numbers), to pin the
pipeline's behaviour across refactorings: `tests/test_demo.py` compares a fresh run with `tests/golden/demo_mini.json`.

Tolerances come from the arithmetic, so the pin holds on any CPU and fails for a change of behaviour:
- the first logged training loss of each stage (the mean over its first logging window): its first step depends on
  the init, the data, the augmentation and the masks only; the later ones see Adam's noisy steps only on elements
  whose gradient is near 0, which moves the loss at second order. Float32 reduction-order rounding: rtol 1e-4;
- a checkpoint tensor is pinned by two projections (its sum, and its dot product with a fixed +-1 pattern). Another
  CPU rounds differently and Adam turns that noise into steps of up to lr on the few elements whose gradient is near
  0, so a projection moves by at most a few lr-sized terms: rtol 1e-3 of sum(|w|). A changed init, learning rate,
  data order or loss moves most elements and the projection by far more;
- results.json: the point estimates ("value") of the rank and overlap metrics (AUROC, Dice, IoU, alignment). On 16
  test images noise that reorders two scores moves an AUROC by one pair out of n_pos x n_neg (about 0.02 here), so
  atol 0.05 (two such flips). Thresholded metrics (accuracy, F1, retrieval R@k, ...) and the best epoch are left
  out: one score crossing 0.5 moves a recall over 5 positives by 0.2, one rank flip an R@1 over 16 rows by 0.06.

    python tests/pipeline_pin.py RUN_DIR OUT.json      # write the fingerprint of a finished miniature demo
"""
import json
import sys
from pathlib import Path

import numpy as np

CHECKPOINTS = ("mae/last.pt", "labs/last.pt", "ecg_teacher/teacher.pth", "distill/last.pt", "distill/encoder.pt",
               "distill_shuffled/encoder.pt")
LOGS = ("mae", "labs", "distill", "distill_shuffled")
RESULTS = ("eval_physiology/results.json", "eval_anatomy/results.json")
SECTIONS = ("classification", "segmentation", "alignment")
THRESHOLDED = ("accuracy", "precision", "recall", "f1", "f1_tuned", "R@1", "R@5", "R@10")


def _pattern(n: int) -> np.ndarray:
    return np.random.default_rng(0).choice([-1.0, 1.0], size=n)


def _numbers(obj, prefix: str, out: dict) -> None:
    """The point estimates under `obj`: every {"value": x, "median": ...} interval not of a thresholded metric."""
    if isinstance(obj, dict) and "value" in obj and "median" in obj:
        if prefix.rsplit("/", 1)[-1] not in THRESHOLDED:
            out[prefix] = float(obj["value"])
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _numbers(v, f"{prefix}/{k}", out)


def fingerprint(run: Path) -> dict:
    import torch  # noqa: F401 (the checkpoint loader needs it)

    from pacx.checkpoint import load

    tensors = {}
    for name in CHECKPOINTS:
        ckpt = load(run / name)
        for key, t in ckpt.get("model", ckpt.get("state_dict")).items():  # pacx runs / the ECGFounder layout
            w = t.double().reshape(-1).numpy()
            tensors[f"{name}:{key}"] = [float(w.sum()), float(w @ _pattern(w.size)), float(np.abs(w).sum())]
    first_loss = {}
    for name in LOGS:
        records = [json.loads(line) for line in (run / name / "metrics.jsonl").read_text().splitlines()]
        first = next(r for r in records if "loss" in r or "total" in r)
        first_loss[name] = {k: v for k, v in first.items() if k in ("loss", "total", "contrastive", "regression")}
    results = {}
    for name in RESULTS:
        data = json.loads((run / name).read_text())
        for section in SECTIONS:
            if section in data:
                _numbers(data[section], f"{name}:{section}", results)
    return {"tensors": tensors, "first_loss": first_loss, "results": results}


def compare(new: dict, golden: dict) -> list[str]:
    """Every pinned value that moved by more than its tolerance (an empty list: the run matches)."""
    bad = []
    if set(new["tensors"]) != set(golden["tensors"]):
        bad.append(f"checkpoint keys differ: {sorted(set(new['tensors']) ^ set(golden['tensors']))[:5]}")
    for key in set(new["tensors"]) & set(golden["tensors"]):
        (s, p, _), (s0, p0, a0) = new["tensors"][key], golden["tensors"][key]
        tol = 1e-3 * a0 + 1e-6
        if abs(s - s0) > tol or abs(p - p0) > tol:
            bad.append(f"{key}: projections ({s:.6g}, {p:.6g}) vs pinned ({s0:.6g}, {p0:.6g}), tolerance {tol:.3g}")
    for run, losses in golden["first_loss"].items():
        for k, v0 in losses.items():
            v = new["first_loss"].get(run, {}).get(k)
            if v is None or abs(v - v0) > 1e-4 * abs(v0):
                bad.append(f"{run} first {k}: {v} vs pinned {v0}")
    if set(new["results"]) != set(golden["results"]):
        bad.append(f"results.json entries differ: {sorted(set(new['results']) ^ set(golden['results']))[:5]}")
    for key in set(new["results"]) & set(golden["results"]):
        v, v0 = new["results"][key], golden["results"][key]
        if not (np.isnan(v) and np.isnan(v0)) and abs(v - v0) > 0.05:
            bad.append(f"{key}: {v:.4f} vs pinned {v0:.4f}")
    return sorted(bad)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    Path(sys.argv[2]).write_text(json.dumps(fingerprint(Path(sys.argv[1])), indent=0, sort_keys=True))
