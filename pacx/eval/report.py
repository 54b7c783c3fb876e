"""evaluate.py's results: every test number with its 95% bootstrap interval and the paired difference against the
reference backbone, as strict JSON (results.json) and paper-style Markdown tables (results.md).

METHOD.md "Stage 3": 500 resamples of the test set, median with 2.5 / 97.5 percentiles (the CXformer model card);
differences are paired (the same resamples for both backbones). One `*_section` function per part of the report;
each returns (its results.json entry, its Markdown lines).
"""
import math
from dataclasses import asdict, is_dataclass
from functools import partial

import numpy as np

from pacx.eval.alignment import random_pair_baseline, summarize
from pacx.eval.bootstrap import bootstrap, bootstrap_ci, bootstrap_mean, paired_bootstrap, paired_mean_difference
from pacx.eval.metrics import classification_metrics, single_class_columns, tune_threshold

METRIC_NAMES = {"auroc": "AUROC", "accuracy": "accuracy", "precision": "precision", "recall": "recall",
                "f1": "F1 @0.5", "f1_tuned": "F1 @val-tuned thr.", "dice": "Dice", "iou": "IoU", "r2": "R²",
                "cosine": "cosine", "cosine_centered": "cosine centred", "cosine_centered_test_mean":
                "cosine centred (test mean, ref.)"}


def jsonable(obj):
    """Intervals -> dicts, numpy -> Python, NaN -> null (strict JSON)."""
    if is_dataclass(obj):
        return jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _cell(ci, signed: bool = False) -> str:
    if ci is None or not math.isfinite(ci.median):
        return "n/a"
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(ci.median)} [{f.format(ci.lo)}, {f.format(ci.hi)}]"


def table(rows: list[tuple[list[str], dict, dict]], lead: list[str], names: list[str], ref: str) -> list[str]:
    """Markdown rows: the `lead` columns (the last one a metric key, shown by its METRIC_NAMES name), one column per
    backbone, one per difference vs the reference."""
    others = [n for n in names if n != ref]
    head = lead + names + [f"{n} − {ref}" for n in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for lead_cells, values, deltas in rows:
        lead_cells = lead_cells[:-1] + [METRIC_NAMES.get(lead_cells[-1], lead_cells[-1])]
        cells = lead_cells + [_cell(values.get(n)) for n in names] + [_cell(deltas.get(n), True) for n in others]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def header(backbones: dict, ref: str, n_resamples: int) -> list[str]:
    return ["# PaCX-MAE evaluation", "",
            "Backbones: " + ", ".join(f"{n} ({info['path']})" for n, info in backbones.items()) +
            f". Reference: {ref}.",
            f"Cells: median [2.5%, 97.5%] over {n_resamples} bootstrap resamples of the test set; differences are "
            "paired (same resamples).", ""]


def classification_section(runs: dict, y_val: np.ndarray, y_test: np.ndarray, task: dict, names: list[str],
                           ref: str, n_resamples: int, seed: int, log,
                           skipped: dict | None = None) -> tuple[dict, list[str]]:
    """`runs[fraction][backbone]` = {'p_val', 'p_test', 'n_train', 'best_epoch', 'best_val_auroc'}; `task` =
    {'name', 'type', 'mode', 'labels'}; `skipped[fraction]` = {'n_train', 'reason'} of the fractions that could not
    be scored (`pacx.eval.lowlabel.not_computable`). Metrics at 0.5 and at thresholds tuned on validation (per
    backbone). A label with one class only in a split has no AUROC there, so it leaves the validation AUROC that
    selects the epoch, or the test AUROC: both are warned about and recorded."""
    skipped = skipped or {}
    one_class = {"val": [], "test": []}
    if runs:
        first = next(iter(next(iter(runs.values())).values()))
        one_class = {split: [task["labels"][c] for c in single_class_columns(y, first[f"p_{split}"], task["type"])]
                     for split, y in (("val", y_val), ("test", y_test))}
    what = {"val": "validation AUROC (model selection)", "test": "test AUROC"}
    for split, labels in one_class.items():
        if labels:
            log(f"warning: {what[split]} skips {labels}: one class only in the {split} split")
    section = {"task": task["name"], "task_type": task["type"], "mode": task["mode"], "labels": task["labels"],
               "auroc_skipped_val_columns": one_class["val"], "auroc_skipped_test_columns": one_class["test"],
               "fractions": {}, "not_computable": {f"{f:g}": v for f, v in skipped.items()}}
    rows = []
    for frac, per in runs.items():
        log(f"bootstrap: classification at {frac:g} of the labels, {n_resamples} resamples")
        metric = {n: partial(classification_metrics, task=task["type"],
                             thresholds=tune_threshold(y_val, per[n]["p_val"], task["type"])) for n in names}
        tested = {n: bootstrap_ci(metric[n], y_test, per[n]["p_test"], n_resamples, seed) for n in names}
        delta = {n: paired_bootstrap(metric[n], y_test, per[n]["p_test"], per[ref]["p_test"], n_resamples, seed,
                                     metric_b=metric[ref]) for n in names if n != ref}
        section["fractions"][f"{frac:g}"] = {
            "n_train": per[ref]["n_train"], "delta": delta,
            "backbones": {n: {"test": tested[n], "best_epoch": per[n]["best_epoch"],
                              "best_val_auroc": per[n]["best_val_auroc"]} for n in names}}
        rows += [([f"{frac:.0%} (n={per[ref]['n_train']})", key], {n: tested[n][key] for n in names},
                  {n: d[key] for n, d in delta.items()}) for key in tested[ref]]
    rows += [([f"{frac:.0%} (n={s['n_train']})", "not computable"], {}, {}) for frac, s in skipped.items()]
    md = [f"## Classification: {task['name']} ({task['type']}, {task['mode']})", ""]
    md += table(rows, ["train labels", "metric"], names, ref) + [""]
    for frac, s in skipped.items():
        md += [f"{frac:.0%} of the training labels (n={s['n_train']}) is not computable: {s['reason']}.", ""]
    if one_class["val"]:
        md += [f"Validation AUROC (the model selection) leaves out {', '.join(one_class['val'])} (one class only in "
               f"the validation split).", ""]
    if one_class["test"]:
        md += [f"AUROC leaves out {', '.join(one_class['test'])} (one class only in the test split).", ""]
    return section, md


def segmentation_section(runs: dict, data_name: str, names: list[str], ref: str, n_resamples: int,
                         seed: int) -> tuple[dict, list[str]]:
    """`runs[backbone]` = {'dice', 'iou' (per test image), 'best_epoch', 'best_val_dice'}: means over the images."""
    n_test = len(runs[ref]["dice"])
    tested = {n: {k: bootstrap_mean(runs[n][k], n_resamples, seed) for k in ("dice", "iou")} for n in names}
    delta = {n: {k: paired_mean_difference(runs[n][k], runs[ref][k], n_resamples, seed) for k in ("dice", "iou")}
             for n in names if n != ref}
    section = {"data": data_name, "n_test": n_test, "delta": delta,
               "backbones": {n: {"test": tested[n], "best_epoch": runs[n]["best_epoch"],
                                 "best_val_dice": runs[n]["best_val_dice"],
                                 "batch_pooled": runs[n]["batch_pooled"]} for n in names}}
    md = [f"## Segmentation: {data_name} (frozen backbone, {n_test} test images)", ""]
    md += table([([k], {n: tested[n][k] for n in names}, {n: d[k] for n, d in delta.items()})
                 for k in ("dice", "iou")], ["metric"], names, ref) + [""]
    md += ["The original's score (counts pooled over each test batch, batches averaged): " + "; ".join(
        f"{n} Dice {runs[n]['batch_pooled']['dice']:.3f} IoU {runs[n]['batch_pooled']['iou']:.3f}" for n in names),
        ""]
    return section, md


def alignment_section(runs: dict, targets: dict, names: list[str], ref: str, n_resamples: int,
                      seed: int) -> tuple[dict, list[str]]:
    """`runs[target][backbone]` = `pacx.eval.alignment.alignment_probe`'s output; `targets[target]` = {split: rows}."""
    section, rows = {}, []
    for key, per in runs.items():
        t_test = targets[key]["test"]
        fns = {n: partial(summarize, t_test, per[n]["pred"], per[n]["rows"]) for n in names}
        tested = {n: bootstrap(fns[n], len(t_test), n_resamples, seed) for n in names}
        delta = {n: bootstrap(lambda i, n=n: {k: v - fns[ref](i)[k] for k, v in fns[n](i).items()}, len(t_test),
                              n_resamples, seed) for n in names if n != ref}
        baseline = random_pair_baseline(t_test, targets[key]["train"].mean(0, keepdims=True), seed)
        section[key] = {"n_test": len(t_test), "random_pair_baseline": baseline,
                        "backbones": {n: tested[n] for n in names}, "delta": delta}
        rows += [([key, k], {n: tested[n][k] for n in names}, {n: d[k] for n, d in delta.items()})
                 for k in tested[ref]]
    md = ["## Physiology alignment (ridge probe from frozen CXR features)", ""]
    md += table(rows, ["target", "metric"], names, ref) + [""]
    md += ["Random-pair cosine baseline: " + "; ".join(
        f"{k} raw {v['random_pair_baseline']['random_pair_cosine']:.3f}, centred "
        f"{v['random_pair_baseline']['random_pair_cosine_centered']:.3f}" for k, v in section.items()), ""]
    return section, md


def rollout_section(files: list[str], names: list[str], ref: str) -> tuple[dict, list[str]]:
    others = [n for n in names if n != ref]
    section = {"tiles": ["image"] + names + [f"{n} - {ref}" for n in others], "files": files}
    md = [f"Attention rollout: {len(files)} figures in rollout/ (tiles: image, " + ", ".join(names) +
          "".join(f", {n} − {ref}" for n in others) + ").", ""]
    return section, md
