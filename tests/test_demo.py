"""The one-command demo at a miniature size: every stage runs, every output file exists and parses, and the outputs
equal the pinned fingerprint of tests/golden/demo_mini.json (tests/pipeline_pin.py says how close, and why)."""
import json
import subprocess
import sys

from PIL import Image

from conftest import ROOT
from pipeline_pin import compare, fingerprint

GOLDEN = ROOT / "tests" / "golden" / "demo_mini.json"


def test_demo_pipeline_writes_every_output(tmp_path):
    out = tmp_path / "demo"
    res = subprocess.run(
        [sys.executable, "-m", "pacx.world.demo", "--out_dir", str(out), "--n_train", "40", "--n_val", "16", "--n_test",
         "16", "--mae_epochs", "2", "--dae_epochs", "2", "--distill_epochs", "2", "--ecg_teacher_epochs", "1",
         "--batch_size", "8", "--fractions", "0.1,1.0", "--bootstrap", "20", "--workers", "0"],
        cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for run in ("mae", "labs", "distill", "distill_shuffled"):
        assert (out / run / "last.pt").is_file() and (out / run / "metrics.jsonl").read_text().strip()
    for run in ("distill", "distill_shuffled"):
        assert (out / run / "encoder.pt").is_file()
        assert set(json.loads((out / run / "retrieval.json").read_text())) >= {"ecg", "labs"}  # both teachers ran
    assert (out / "ecg_teacher" / "teacher.pth").is_file()
    oracle = json.loads((out / "world" / "oracle.json").read_text())
    assert set(oracle["embeddings"]) == {"labs", "ecg"} and "fluid_overload" in oracle["labels"]
    for name in ("eval_physiology", "eval_anatomy"):
        results = json.loads((out / name / "results.json").read_text())
        assert set(results["backbones"]) == {"random", "mae", "pacx", "pacx_shuffled"}
        assert "classification_logreg" in results
        assert (out / name / "results.md").read_text().startswith("#")
    physiology = json.loads((out / "eval_physiology" / "results.json").read_text())
    assert "segmentation" in physiology and set(physiology["alignment"]) == {"ecg", "labs"}
    summary = (out / "summary.md").read_text()
    for part in ("## Stage 2", "distill_shuffled | ecg", "**physiology**", "**anatomy**", "pacx − mae",
                 "## Segmentation", "## Alignment", "oracle report", "## Time per step"):
        assert part in summary, part
    figures = sorted((out / "figures").glob("*.png"))
    assert {f.name for f in figures} == {"recon.png", "rollout.png", "lowlabel.png", "curves.png", "stage2.png"}
    for f in figures:
        with Image.open(f) as im:
            assert im.format == "PNG" and im.width == 1200 and im.height >= 300
    assert "Everything is in" in res.stdout
    moved = compare(fingerprint(out), json.loads(GOLDEN.read_text()))
    assert not moved, f"{len(moved)} pinned values moved, e.g. " + "; ".join(moved[:5])
