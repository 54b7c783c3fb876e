"""summary.md of the demo (`pacx.world.demo`): the numbers that say whether the method worked on the built-in world,
read from the files the stages wrote, never recomputed.

Sections, in the order a reader checks them:
  Stage 2       per run (real pairs, shuffled-pairs control) and teacher: the last logged training InfoNCE against
                ln(batch) (its value when the image tells nothing about the target), and the validation retrieval
                top-1 / top-5 with 95% Wilson intervals against chance (train_distill.py's retrieval.json);
  headline      PaCX - MAE (and shuffled - MAE), paired bootstrap intervals over the test set, macro AUROC of the
                physiology labels and of the anatomy labels, at each label fraction, for the reference AdamW probe
                and the converged logistic regression (evaluate.py's results.json);
  segmentation  Dice per backbone; alignment: cosine (centred) and R@5 of the ridge probe to each teacher;
  oracle        what linear models on the latent state / the pixels / the teachers explain (pacx.world.oracle),
                so a reader knows what gain was possible;
  time          seconds per step and in all.
"""
import json
from pathlib import Path

import numpy as np

from pacx.runlog import read_jsonl


def _ci(d: dict) -> str:
    """'value [lo, hi]' of a bootstrap record (value = the whole test set's estimate)."""
    return f"{d['value']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"


def stage2_section(runs: dict[str, Path]) -> list[str]:
    """`runs`: name -> train_distill.py out_dir."""
    lines = ["## Stage 2: InfoNCE and validation retrieval (last epoch)", "",
             "| run | teacher | train InfoNCE | ln(batch) | val top-1 [95%] | chance | val top-5 [95%] | chance |",
             "|---|---|---|---|---|---|---|---|"]
    for name, folder in runs.items():
        train = [r for r in read_jsonl(folder / "metrics.jsonl") if "total" in r]
        batch = json.loads((folder / "config.json").read_text())["script"]["batch_size"]
        retrieval = json.loads((folder / "retrieval.json").read_text())
        for m in ("ecg", "labs"):
            if m not in retrieval:
                continue
            queries = retrieval[m]["queries"]
            t1, t5 = retrieval[m]["top1"], retrieval[m]["top5"]
            loss = f"{train[-1][f'contrastive_{m}']:.3f}" if train and f"contrastive_{m}" in train[-1] else "-"
            lines.append(f"| {name} | {m} | {loss} | {np.log(batch):.3f} | {t1['value']:.3f} "
                         f"[{t1['interval'][0]:.3f}, {t1['interval'][1]:.3f}] | {t1['chance']:.3f} | "
                         f"{t5['value']:.3f} [{t5['interval'][0]:.3f}, {t5['interval'][1]:.3f}] | "
                         f"{t5['chance']:.3f} |")
    return lines + ["", f"In-batch retrieval among {retrieval['candidates']} validation patients ({queries} "
                        f"queries); curves in figures/stage2.png.", ""]


def headline_section(results: dict[str, dict], ref: str = "mae") -> list[str]:
    """`results`: task name -> evaluate.py results.json. AUROC per backbone and the paired differences to `ref`."""
    lines = ["## PaCX vs MAE on the test split (macro AUROC, paired bootstrap 95% intervals)", ""]
    for task, res in results.items():
        for key, probe in (("classification", "reference AdamW probe"),
                           ("classification_logreg", "logistic regression, C chosen on validation")):
            if key not in res:
                continue
            sec = res[key]
            names = list(res["backbones"])
            others = [n for n in names if n != ref]
            lines += [f"**{task}** ({', '.join(sec['labels'])}), {probe}:", "",
                      "| labels | " + " | ".join(names) + " | " + " | ".join(f"{n} − {ref}" for n in others) + " |",
                      "|---" * (1 + len(names) + len(others)) + "|"]
            for frac, cell in sec["fractions"].items():
                auroc = {n: cell["backbones"][n]["test"]["auroc"]["value"] for n in names}
                lines.append(f"| {float(frac) * 100:g}% (n={cell['n_train']}) | " +
                             " | ".join(f"{auroc[n]:.3f}" for n in names) + " | " +
                             " | ".join(_ci(cell["delta"][n]["auroc"]) for n in others) + " |")
            for frac, why in sec.get("not_computable", {}).items():
                lines.append(f"| {float(frac) * 100:g}% | not computable: {why} |")
            lines.append("")
    return lines


def segmentation_alignment_section(res: dict, ref: str = "mae") -> list[str]:
    lines = []
    if "segmentation" in res:
        seg = res["segmentation"]
        lines += [f"## Segmentation ({seg['data']}, frozen backbone, {seg['n_test']} test images)", "",
                  "| backbone | test Dice | − " + ref + " | best val Dice (epoch) |", "|---|---|---|---|"]
        for n, b in seg["backbones"].items():
            delta = _ci(seg["delta"][n]["dice"]) if n in seg["delta"] else "-"
            lines.append(f"| {n} | {b['test']['dice']['value']:.3f} | {delta} | {b['best_val_dice']:.3f} "
                         f"({b['best_epoch']}) |")
        lines.append("")
    if "alignment" in res:
        lines += ["## Alignment (ridge from frozen CLS features to each teacher's embedding, test split)", "",
                  "| teacher | backbone | cosine (centred) | R@5 | R^2 |", "|---|---|---|---|---|"]
        for teacher, sec in res["alignment"].items():
            for n, b in sec["backbones"].items():
                lines.append(f"| {teacher} | {n} | {b['cosine_centered']['value']:.3f} | {b['R@5']['value']:.3f} | "
                             f"{b['r2']['value']:.3f} |")
        lines += ["", "R@5 among all " + ", ".join(f"{k}: {v['n_test']}" for k, v in res["alignment"].items()) +
                  " test patients (chance 5 / n).", ""]
    return lines


def timing_section(timings: dict[str, float]) -> list[str]:
    return (["## Time per step (s, wall clock)", "", "| step | seconds |", "|---|---|"] +
            [f"| {k} | {v:.0f} |" for k, v in timings.items()] + [f"| all | {sum(timings.values()):.0f} |", ""])
