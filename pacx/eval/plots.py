"""Figures for visualize.py: MAE reconstructions, attention-rollout overlays, the low-label plot, training curves.

Implements the pictures of METHOD.md "Stage 1a" (what the MAE reconstructs) and "Stage 3" (attention rollout of MAE
vs PaCX and their difference; the low-data regime at 1% / 10% / 100% labels with 95% bootstrap intervals).
The reconstruction panels follow the MAE demo (facebookresearch/mae `demo/mae_visualize.ipynb`): original, masked
(removed patches zeroed in the normalised space, so they show as the ImageNet mean colour), reconstruction with the
visible patches pasted back, reconstruction alone.

Panel composition is plain torch (tested against hand indexing); the drawing uses matplotlib's object API
(`matplotlib.figure.Figure`, no pyplot state, no backend switch), imported inside each function so `import pacx`
stays cheap. A figure is `width x height` inches at `dpi`, saved without tight cropping, so its pixel size is
exactly `(width * dpi, height * dpi)`.

Notation: B = images, L = patches (G*G), P = patch side, G = patches per side, S = image side.
"""
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from pacx.errors import PacxError
from pacx.models.mae import patchify, unpatchify
from pacx.data.transforms import denormalize


# ---- panel composition (no matplotlib) ----

def compose_reconstruction(imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, patch_size: int,
                           norm_pix_loss: bool = False) -> dict[str, torch.Tensor]:
    """The three derived panels of an MAE forward, all (B, 3, S, S) in the model's (ImageNet-normalised) space.

    imgs (B, 3, S, S), pred (B, L, P*P*3), mask (B, L) with 1 = removed. With `norm_pix_loss` the model predicts
    each patch normalised by its own mean and std, so the prediction is mapped back with the *true* patch's
    statistics (the usual way to show such a model; those statistics are not something the model saw).
    Returns 'masked' (removed patches zeroed), 'pasted' (prediction at removed patches, original pixels at visible
    ones) and 'recon' (the prediction everywhere).
    """
    pred = pred.float()
    if norm_pix_loss:
        target = patchify(imgs, patch_size)  # (B, L, P*P*3)
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)  # unbiased, as in MaskedAutoencoder.forward_loss
        pred = pred * (var + 1.0e-6) ** 0.5 + mean
    recon = unpatchify(pred, patch_size, imgs.shape[1])  # (B, 3, S, S)
    pixel_mask = unpatchify(mask[..., None].float().expand(-1, -1, pred.shape[-1]), patch_size,
                            imgs.shape[1])  # (B, 3, S, S): 1 on removed patches
    masked = imgs * (1 - pixel_mask)
    return {"masked": masked, "pasted": masked + recon * pixel_mask, "recon": recon}


def to_display(img: torch.Tensor) -> np.ndarray:
    """ImageNet-normalised (3, S, S) -> (S, S, 3) float in [0, 1] for imshow."""
    return denormalize(img.detach().cpu().float()).permute(1, 2, 0).numpy()  # (S, S, 3)


# ---- figures ----

def _figure(width: float, height: float, dpi: int):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=dpi, layout="constrained")


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=fig.dpi)  # no bbox_inches="tight": the pixel size stays width x height x dpi
    return path


def _blank(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _colorbar(fig, im, ax, label: str) -> None:
    """A colorbar in full colour, although its image is blended over the X-ray."""
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label=label)
    cb.solids.set_alpha(1)


def plot_reconstructions(path, rows: list[dict], mask_ratio: float, dpi: int = 100) -> Path:
    """One row per image: original / masked / reconstruction + visible / reconstruction. Each row dict holds
    'name', 'loss' (MSE on the removed patches) and the four (S, S, 3) [0, 1] arrays 'original', 'masked',
    'pasted', 'recon'. Figure 12 x 3 * rows inches."""
    titles = {"original": "original", "masked": f"masked ({mask_ratio:.0%} of patches removed)",
              "pasted": "reconstruction + visible patches", "recon": "reconstruction only"}
    fig = _figure(12, 3 * len(rows), dpi)
    axes = fig.subplots(len(rows), 4, squeeze=False)
    for r, row in enumerate(rows):
        for c, key in enumerate(titles):
            ax = axes[r, c]
            ax.imshow(np.clip(row[key], 0, 1), interpolation="nearest")
            _blank(ax)
            if r == 0:
                ax.set_title(titles[key], fontsize=10)
        axes[r, 0].set_ylabel(f"{row['name']}\nmasked-patch MSE {row['loss']:.3f}", fontsize=9)
    fig.suptitle("MAE reconstructions (fixed mask seed)", fontsize=13)
    return _save(fig, path)


def plot_rollouts(path, rows: list[dict], model_names: list[str], normalised_input: bool, dpi: int = 100,
                  alpha: float = 0.5) -> Path:
    """One row per image: the X-ray, each model's rollout overlaid on it and, for two models, their difference
    (second minus first). Row dicts hold 'name', 'gray' (S, S) in [0, 1] and 'maps' (one (S, S) [0, 1] map per
    model, in `model_names` order). Figure 12 x 3 * rows inches."""
    n_cols = 1 + len(model_names) + (len(model_names) == 2)
    fig = _figure(12, 3 * len(rows), dpi)
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    for r, row in enumerate(rows):
        gray, maps = row["gray"], row["maps"]
        axes[r, 0].imshow(gray, cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_ylabel(row["name"], fontsize=9)
        for c, (name, heat) in enumerate(zip(model_names, maps), start=1):
            axes[r, c].imshow(gray, cmap="gray", vmin=0, vmax=1)
            im = axes[r, c].imshow(heat, cmap="jet", vmin=0, vmax=1, alpha=alpha)
            _colorbar(fig, im, axes[r, c], "rollout (min-max)")
            if r == 0:
                axes[r, c].set_title(f"{name} attention rollout", fontsize=10)
        if len(model_names) == 2:
            diff = maps[1] - maps[0]
            lim = max(float(np.abs(diff).max()), 1e-6)  # symmetric, so white is "no difference"
            ax = axes[r, 3]
            ax.imshow(gray, cmap="gray", vmin=0, vmax=1)
            im = ax.imshow(diff, cmap="RdBu_r", vmin=-lim, vmax=lim, alpha=0.6)
            _colorbar(fig, im, ax, f"{model_names[1]} - {model_names[0]}")
            if r == 0:
                ax.set_title(f"difference ({model_names[1]} - {model_names[0]})", fontsize=10)
        if r == 0:
            axes[r, 0].set_title("chest X-ray", fontsize=10)
        for ax in axes[r]:
            _blank(ax)
    # METHOD.md "Quirks": the reference runs the rollout on [0, 1] pixels without ImageNet normalisation.
    how = "ImageNet-normalised input" if normalised_input else "input in [0, 1], not ImageNet-normalised (reference)"
    fig.suptitle(f"Attention rollout: CLS token over patches, mean over heads, all layers; {how}", fontsize=12)
    return _save(fig, path)


# ---- low-label results ----

RESULT_KEYS = ("backbone", "fraction", "metric", "value")  # required in a flat record


def read_results(path) -> list[dict]:
    """Low-label records {dataset, task, backbone, fraction, metric, value, ci_low, ci_high} from a results JSON.

    Two layouts are read:
    - evaluate.py's `results.json`: `classification` = {task, mode, fractions: {"0.01": {backbones: {name: {test:
      {metric: {value, median, lo, hi, n_resamples}}}}}}}. The plotted value is the bootstrap median with its
      2.5 / 97.5 percentiles (the cells of results.md), the full-set value where the median is null;
      dataset = the task name, task = the training mode (probe / finetune / lora).
    - a flat list of records (or {"records": [...]}), each {"backbone", "fraction" in (0, 1], "metric", "value"}
      with optional "dataset", "task", "ci_low", "ci_high" (null: no interval).
    """
    path = Path(path)
    if not path.is_file():
        raise PacxError(f"{path}: results file not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PacxError(f"{path}: not valid JSON ({e})") from None
    if isinstance(data, dict) and "classification" in data:
        records = _evaluate_records(data["classification"], path)
    else:
        records = data.get("records") if isinstance(data, dict) else data
    if not isinstance(records, list) or not records:
        raise PacxError(f"{path}: expected evaluate.py's results (a 'classification' section) or a non-empty list "
                        f"of records, found {type(records).__name__}")
    return [_check_record(rec, path, i) for i, rec in enumerate(records)]


def _evaluate_records(section: dict, path: Path) -> list[dict]:
    """evaluate.py's classification section -> flat records."""
    out = []
    try:
        for frac, per in section["fractions"].items():
            for backbone, entry in per["backbones"].items():
                for metric, ci in entry["test"].items():
                    centre = ci["median"] if ci.get("median") is not None else ci["value"]
                    out.append({"dataset": section.get("task", ""), "task": section.get("mode", ""),
                                "backbone": backbone, "fraction": float(frac), "metric": metric, "value": centre,
                                "ci_low": ci.get("lo"), "ci_high": ci.get("hi")})
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise PacxError(f"{path}: 'classification' section not in evaluate.py's layout (fractions -> backbones -> "
                        f"test -> metric -> median/lo/hi): {type(e).__name__} {e}") from None
    return out


def _check_record(rec, path: Path, i: int) -> dict:
    if not isinstance(rec, dict):
        raise PacxError(f"{path}: record {i} is a {type(rec).__name__}, expected an object")
    missing = [k for k in RESULT_KEYS if k not in rec]
    if missing:
        raise PacxError(f"{path}: record {i} lacks {', '.join(missing)} (needs {', '.join(RESULT_KEYS)})")
    try:
        fraction = float(rec["fraction"])
        value, lo, hi = (None if rec.get(k) is None else float(rec[k]) for k in ("value", "ci_low", "ci_high"))
    except (TypeError, ValueError):
        raise PacxError(f"{path}: record {i}: fraction, value, ci_low and ci_high must be numbers") from None
    if not 0 < fraction <= 1:
        raise PacxError(f"{path}: record {i}: fraction must be in (0, 1], found {fraction}")
    return {"dataset": str(rec.get("dataset", "")), "task": str(rec.get("task", "")),
            "backbone": str(rec["backbone"]), "metric": str(rec["metric"]), "fraction": fraction,
            "value": value, "ci_low": lo, "ci_high": hi}


def lowlabel_series(records: list[dict]) -> dict[tuple, dict[str, list[tuple]]]:
    """Group records into panels (dataset, task, metric) -> backbone -> [(fraction, value, ci_low, ci_high)] sorted
    by fraction. A repeated (panel, backbone, fraction) is an error: the plot would hide one of them."""
    panels: dict[tuple, dict[str, list[tuple]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        series = panels[(rec["dataset"], rec["task"], rec["metric"])][rec["backbone"]]
        if any(f == rec["fraction"] for f, *_ in series):
            raise PacxError(f"results: two records for {rec['dataset']!r} {rec['task']!r} {rec['metric']!r} "
                            f"{rec['backbone']!r} at fraction {rec['fraction']}")
        series.append((rec["fraction"], rec["value"], rec["ci_low"], rec["ci_high"]))
    return {p: {b: sorted(s) for b, s in by_b.items()} for p, by_b in panels.items()}


def lowlabel_figure_size(n_panels: int) -> tuple[int, int, float, float]:
    """(rows, cols, width, height in inches): up to 3 panels a row, 12 x 8 inches until a third row is needed."""
    cols = min(3, n_panels)
    rows = math.ceil(n_panels / cols)
    return rows, cols, 12.0, max(8.0, 4.0 * rows)


def plot_lowlabel(path, records: list[dict], dpi: int = 100) -> Path:
    """Metric vs label fraction (log axis), one line per backbone with its 95% CI as error bars and a band;
    one panel per (dataset, task, metric)."""
    panels = lowlabel_series(records)
    rows, cols, width, height = lowlabel_figure_size(len(panels))
    fig = _figure(width, height, dpi)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, ((dataset, task, metric), by_backbone) in zip(axes, sorted(panels.items())):
        fractions = sorted({f for s in by_backbone.values() for f, *_ in s})
        for backbone, series in by_backbone.items():
            f, v, lo, hi = (np.array([np.nan if x is None else x for x in col], dtype=float)
                            for col in zip(*series))
            yerr = np.stack([v - lo, hi - v])  # NaN where a record has no interval: no bar drawn
            line = ax.errorbar(f, v, yerr=yerr, marker="o", capsize=4, label=backbone)
            ax.fill_between(f, lo, hi, color=line[0].get_color(), alpha=0.15, linewidth=0)
        ax.set_xscale("log")
        ax.set_xticks(fractions, [_percent(x) for x in fractions])
        ax.minorticks_off()
        ax.set_xlabel("fraction of training labels")
        ax.set_ylabel(metric)
        ax.set_title(" / ".join(p for p in (dataset, task, metric) if p), fontsize=11)
        ax.grid(True, alpha=0.3)
        ax.legend(title="backbone", fontsize=9)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Low-label efficiency (error bars / bands: 95% bootstrap CI)", fontsize=13)
    return _save(fig, path)


def _percent(x: float) -> str:
    """0.01 -> '1%', 0.005 -> '0.5%'."""
    return f"{x * 100:g}%"


# ---- training curves ----

NOT_CURVES = ("step", "epoch", "lr", "img_per_s")


def split_log(records: list[dict]) -> tuple[dict[str, list], dict[str, list], dict[str, list]]:
    """A metrics.jsonl's records -> (training terms, learning rate, validation metrics), each name -> [(step, v)].
    A record with a `val_*` key is a validation record; every other numeric key not in NOT_CURVES is a training
    term."""
    train, lr, val = defaultdict(list), defaultdict(list), defaultdict(list)
    for rec in records:
        step = rec.get("step")
        if step is None:
            continue
        for k, v in rec.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            if k.startswith("val_"):
                val[k].append((step, v))
            elif k == "lr":
                lr[k].append((step, v))
            elif k not in NOT_CURVES:
                train[k].append((step, v))
    return dict(train), dict(lr), dict(val)


def plot_curves(path, logs: dict[str, list[dict]], dpi: int = 100) -> Path:
    """Training terms and lr vs step, plus validation losses and other validation metrics when logged; one line
    per (run, key). `logs`: run name -> its records. Figure 12 x 8 inches, a 2 x 2 grid."""
    split = {run: split_log(recs) for run, recs in logs.items()}
    val_loss = {run: {k: v for k, v in s[2].items() if "loss" in k} for run, s in split.items()}
    val_other = {run: {k: v for k, v in s[2].items() if "loss" not in k} for run, s in split.items()}
    panels = [("training loss", "loss", {run: s[0] for run, s in split.items()}),
              ("learning rate", "lr", {run: s[1] for run, s in split.items()}),
              ("validation loss", "loss", val_loss),
              ("validation metrics", "value", val_other)]
    panels = [p for p in panels if any(p[2].values())]
    if not panels:
        raise PacxError(f"curves: no step-indexed numbers in {', '.join(logs)}")
    fig = _figure(12, 8, dpi)
    axes = fig.subplots(2, 2).ravel()
    several = len(logs) > 1
    for ax, (title, ylabel, by_run) in zip(axes, panels):
        for run, curves in by_run.items():
            for key, pts in curves.items():
                steps, values = zip(*pts)
                ax.plot(steps, values, marker="." if len(pts) < 30 else None,
                        label=f"{run}: {key}" if several else key)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        if ylabel == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Training curves", fontsize=13)
    return _save(fig, path)


def plot_stage2(path, logs: dict[str, list[dict]], batch: int, candidates: int, dpi: int = 100) -> Path:
    """Stage 2 at a glance, one line per (run, teacher): training InfoNCE against its chance level ln(batch), and
    validation InfoNCE and in-batch retrieval top-1 / top-5 against chance (1 / candidates, 5 / candidates).
    A run that learns pulls its InfoNCE below ln(batch) and its retrieval above chance; the shuffled-pairs control
    should do neither. `logs`: run name -> train_distill.py metrics.jsonl records. Figure 12 x 8 inches, 2 x 2."""
    teachers = [t for t in ("ecg", "labs") if any(f"contrastive_{t}" in r for recs in logs.values() for r in recs)]
    if not teachers:
        raise PacxError(f"stage2: no Stage-2 InfoNCE terms (contrastive_ecg / contrastive_labs) in {', '.join(logs)}")
    panels = [("training InfoNCE", "contrastive_{}", np.log(batch), f"ln(batch {batch})"),
              ("validation InfoNCE", "val_contrastive_{}", np.log(candidates), f"ln({candidates})"),
              ("validation retrieval top-1", "val_{}_top1", 1 / candidates, f"chance 1/{candidates}"),
              ("validation retrieval top-5", "val_{}_top5", min(5, candidates) / candidates,
               f"chance {min(5, candidates)}/{candidates}")]
    fig = _figure(12, 8, dpi)
    styles = ("-", "--", ":", "-.")
    for ax, (title, key, chance, chance_label) in zip(fig.subplots(2, 2).ravel(), panels):
        for (run, recs), style in zip(logs.items(), styles * len(logs)):
            for color, teacher in zip(("tab:red", "tab:blue"), teachers):
                pts = [(r["step"], r[key.format(teacher)]) for r in recs if key.format(teacher) in r and "step" in r]
                if pts:
                    steps, values = zip(*pts)
                    ax.plot(steps, values, style, color=color, marker="." if len(pts) < 30 else None,
                            label=f"{run}: {teacher}")
        ax.axhline(chance, color="gray", lw=1, label=chance_label)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Stage 2: InfoNCE and validation retrieval against chance", fontsize=13)
    return _save(fig, path)
