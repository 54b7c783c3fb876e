r"""Stage 3: compare backbones downstream - classification (linear probe, full or LoRA fine-tune, at several label
fractions), segmentation, the physiology alignment probe and attention rollout - with 95% bootstrap intervals and
paired differences against a reference backbone.

DESIGN.md "Stage 3": Linear(D, C) on the CLS feature; probe AdamW 3e-3 wd 0.01 cosine 30 epochs batch 512, fine-tune
head 3e-4 / backbone 0.1x 40 epochs; selection on the best validation AUROC; AUROC, accuracy, precision, recall,
macro-F1 at 0.5 (plus F1 at thresholds tuned on validation); low-label fractions of the training split only;
segmentation decoder on frozen patch tokens (Dice, IoU); ridge alignment probe to ECG / lab embeddings; bootstrap
500 resamples, median [2.5%, 97.5%] (CXformer model card).

    python evaluate.py --backbones "random=,mae=runs/mae/last.pt,pacx=runs/distill/encoder.pt" --reference mae \
        --task_csv nih.csv --label_columns Atelectasis,Cardiomegaly,Effusion --task_type multilabel
    python evaluate.py --backbones ... --task_csv train.csv,val.csv,test.csv --label_columns TB --task_type binary \
        --mode finetune --fractions 1.0
    python evaluate.py --backbones ... --seg_csv lungs.csv                    # img_path, mask_path, split columns
    python evaluate.py --backbones ... --task_csv symile.csv --align_features targets.npz --rollout 8

A CSV argument is one file with a split column (train / val / test) or three comma-separated files train,val,test.
Writes out_dir/results.json (every number with its interval) and out_dir/results.md (paper-style tables). Fine-tuning
runs checkpoint themselves in out_dir/finetune/ (pacx.eval.finetune): after a crash, --resume continues bit-identically.
"""
import json
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from pacx.eval.alignment import alignment_probe, random_pair_baseline, summarize
from pacx.eval.bootstrap import bootstrap, bootstrap_ci, paired_bootstrap
from pacx.config import opt, parse_config
from pacx.data.datasets import ImageCSV, SegmentationCSV
from pacx.dist import init_runtime
from pacx.errors import PacxError, exit_on_error
from pacx.eval.splits import SPLITS, jsonable, load_targets, read_splits, table
from pacx.eval.lowlabel import subsample_indices
from pacx.eval.metrics import TASKS, classification_metrics, single_class_columns, tune_threshold
from pacx.eval.finetune import finetune_run, prepare_eval_dir, prepare_finetune, run_file
from pacx.eval.probe import (ProbeConfig, extract_features, image_label_sample, num_outputs, row_loader, to_probabilities,
                        train_linear_probe)
from pacx.eval.rollout import difference_rgb, overlay, rollout_input, rollout_map, save_row, upsample_minmax
from pacx.eval.segmentation import SegConfig, evaluate_segmentation, seg_item, train_segmentation
from pacx.models.vit import PRESETS, VisionTransformer
from pacx.weights import checkpoint_vit_config, load_vit_weights

# What a fine-tuning run's file must have been written with to be resumed (with the backbone and label fraction).
RUN_OPTIONS = ("model", "img_size", "task_csv", "image_column", "image_root", "label_columns", "task_type", "classes",
               "split_column", "mode", "epochs", "lr", "backbone_lr_scale", "weight_decay", "batch_size", "amp", "seed")


@dataclass
class Config:
    backbones: str = opt("random=", "comma-separated name=checkpoint (pacx, official MAE, timm, PaCX Lightning); "
                                    "an empty path is a random init")
    reference: str = opt("", "backbone the others are compared to by paired bootstrap (default: the first)")
    model: str = opt("base", "ViT preset for random init and checkpoints without a config: base | small | tiny")
    img_size: int = opt(0, "input size for every backbone (0: each backbone's own, 224 for base)")
    task_csv: str = opt("", "classification images: one CSV with --split_column, or train.csv,val.csv,test.csv")
    task_name: str = opt("", "data set name in the tables (default: the CSV file name)")
    image_column: str = opt("Path", "image-path column of the task CSV")
    image_root: str = opt("", "folder relative image paths start from (default: each CSV's folder)")
    label_columns: tuple[str, ...] = opt((), "label columns (binary: one 0/1 column; multilabel: 0/1 columns; "
                                             "multiclass: one column of ids or --classes names); none: no classifier")
    task_type: str = opt("multilabel", "binary | multilabel | multiclass")
    classes: tuple[str, ...] = opt((), "multiclass: class names in id order (default: integer ids 0..K-1)")
    split_column: str = opt("split", "column holding train / val / test when one CSV has every split")
    mode: str = opt("probe", "probe (frozen backbone, cached features) | finetune | lora")
    fractions: tuple[float, ...] = opt((0.01, 0.1, 1.0), "fractions of the training split (val / test stay whole)")
    epochs: int | None = opt(None, "probe 30, finetune / lora 40")
    lr: float | None = opt(None, "head learning rate: probe 3e-3, finetune / lora 3e-4")
    backbone_lr_scale: float = opt(0.1, "finetune / lora: backbone lr = this x head lr")
    weight_decay: float = opt(0.01, "AdamW weight decay (none on biases and norms)")
    batch_size: int = opt(512, "classification batch size (also for feature extraction)")
    probe_flip: bool = opt(True, "probe: train on mirrored images half of the time, as the reference")
    probe_norm: bool = opt(False, "probe: standardise each feature by the training split's mean / std first (the MAE "
                                  "paper's BatchNorm without affine); off: the reference's plain Linear")
    seg_csv: str = opt("", "segmentation CSV(s) with img_path, mask_path (and --split_column)")
    seg_name: str = opt("", "segmentation data set name in the tables (default: the CSV file name)")
    seg_epochs: int = opt(50, "segmentation decoder epochs")
    seg_warmup_epochs: float = opt(5.0, "segmentation warmup epochs")
    seg_lr: float = opt(1e-4, "segmentation AdamW learning rate")
    seg_weight_decay: float = opt(1e-4, "segmentation AdamW weight decay")
    seg_batch_size: int = opt(32, "segmentation batch size")
    align_features: str = opt("", ".npz with 'ecg' (N, 1024) and/or 'labs' (N, 256) targets, one row per task CSV "
                                  "row (three CSVs: train, val, test rows in order), or matched by a 'path' array "
                                  "of image-column values")
    align_alpha: float = opt(10.0, "ridge alpha of the alignment probe")
    rollout: int = opt(0, "save attention-rollout figures of the first N test images (task CSV, else seg CSV)")
    rollout_imagenet_norm: bool = opt(False, "normalise rollout inputs (the reference feeds [0, 1] pixels: quirk)")
    bootstrap: int = opt(500, "bootstrap resamples of the test set")
    workers: int = opt(4, "data-loading processes")
    device: str = opt("auto", "auto | cpu | cuda")
    amp: bool = opt(True, "bf16 autocast on CUDA (ignored on CPU)")
    seed: int = opt(0, "seed for random backbones, subsets, heads, batch order and bootstrap resamples")
    out_dir: str = opt("runs/eval", "folder for results.json, results.md, rollout/ and finetune/ (run checkpoints)")
    resume: bool = opt(False, "continue the evaluation in out_dir: finished fine-tuning runs are reused, an "
                              "interrupted one goes on from its checkpoint, the rest is recomputed")
    overwrite: bool = opt(False, "replace an evaluation already in out_dir")
    ckpt_every: int = opt(0, "finetune / lora: also checkpoint every N steps (0: at the end of each epoch only)")
    log_every: int = opt(10, "progress line every N steps (fine-tune, segmentation) / epochs (probe)")


def resolve(cfg: Config) -> Config:
    if cfg.task_type not in TASKS:
        raise PacxError(f"--task_type: expected one of {TASKS}, got {cfg.task_type!r}")
    if cfg.mode not in ("probe", "finetune", "lora"):
        raise PacxError(f"--mode: expected probe, finetune or lora, got {cfg.mode!r}")
    if cfg.model not in PRESETS:
        raise PacxError(f"--model: expected one of {sorted(PRESETS)}, got {cfg.model!r}")
    if not (cfg.task_csv or cfg.seg_csv):
        raise PacxError("nothing to evaluate: give --task_csv and/or --seg_csv (see --help)")
    if cfg.align_features and not cfg.task_csv:
        raise PacxError("--align_features needs --task_csv (the images whose rows the targets follow)")
    if any(not 0 < f <= 1 for f in cfg.fractions):
        raise PacxError(f"--fractions: expected values in (0, 1], got {cfg.fractions}")
    cfg.epochs = cfg.epochs or (30 if cfg.mode == "probe" else 40)
    if cfg.epochs < 1 or cfg.ckpt_every < 0:
        raise PacxError(f"--epochs / --ckpt_every: expected >= 1 / >= 0, got {cfg.epochs} / {cfg.ckpt_every}")
    cfg.lr = cfg.lr or (3e-3 if cfg.mode == "probe" else 3e-4)
    return cfg


def parse_backbones(text: str) -> list[tuple[str, str]]:
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, path = part.partition("=")
        if not sep or not name.strip():
            raise PacxError(f"--backbones: expected name=checkpoint (empty checkpoint: random init), got {part!r}")
        out.append((name.strip(), path.strip()))
    names = [n for n, _ in out]
    if not out or len(set(names)) != len(names):
        raise PacxError(f"--backbones: expected distinct names, got {names}")
    return out


def build_backbone(path: str, cfg: Config) -> VisionTransformer:
    vit_cfg = (checkpoint_vit_config(path) if path else None) or PRESETS[cfg.model]()
    if cfg.img_size:
        vit_cfg.img_size = cfg.img_size
    torch.manual_seed(cfg.seed)  # a random backbone is the same in every run
    model = VisionTransformer(vit_cfg)
    if path:
        load_vit_weights(model, path)
    return model


@exit_on_error
def main(argv=None):
    cfg = resolve(parse_config(Config, argv, __doc__))
    rt = init_runtime(cfg.device, cfg.seed, cfg.amp)
    out = prepare_eval_dir(cfg.out_dir, cfg.resume, cfg.overwrite)
    log = rt.print0
    specs = parse_backbones(cfg.backbones)
    names = [n for n, _ in specs]
    ref = cfg.reference or names[0]
    if ref not in names:
        raise PacxError(f"--reference {ref!r} is not one of the backbones {names}")
    root = cfg.image_root or None
    pin = rt.device.type == "cuda"

    # ---- data ----
    task, seg, targets = None, None, None
    if cfg.task_csv:
        splits = read_splits(cfg.task_csv, cfg.split_column, cfg.image_column)
        sets = {p: ImageCSV(p, cfg.image_column, list(cfg.label_columns), root, cfg.task_type, cfg.classes or None)
                for p in {s["csv"] for s in splits.values()}}
        task = {s: {"data": sets[info["csv"]], "rows": info["rows"]} for s, info in splits.items()}
        if cfg.label_columns:
            for s in task.values():
                s["y"] = s["data"].labels[s["rows"]]  # (N, C) float 0/1, or (N,) int64 class ids
            n_classes = len(cfg.classes) if cfg.classes else None
            if cfg.task_type == "multiclass" and n_classes is None:
                n_classes = int(max(s["y"].max() for s in task.values())) + 1
        if cfg.align_features:
            targets = load_targets(cfg.align_features, splits)
        log(f"task {cfg.task_csv}: " + ", ".join(f"{s} {len(v['rows'])}" for s, v in task.items()))
    if cfg.seg_csv:
        seg_splits = read_splits(cfg.seg_csv, cfg.split_column, "img_path")
        seg_sets = {p: SegmentationCSV(p, root) for p in {s["csv"] for s in seg_splits.values()}}
        seg = {s: {"data": seg_sets[info["csv"]], "rows": info["rows"]} for s, info in seg_splits.items()}
        log(f"segmentation {cfg.seg_csv}: " + ", ".join(f"{s} {len(v['rows'])}" for s, v in seg.items()))
    classify = task is not None and bool(cfg.label_columns)
    subsets = {f: subsample_indices(task["train"]["y"], f, cfg.seed) for f in cfg.fractions} if classify else {}
    probe_cfg = ProbeConfig(epochs=cfg.epochs, lr=cfg.lr, backbone_lr_scale=cfg.backbone_lr_scale,
                            weight_decay=cfg.weight_decay, batch_size=cfg.batch_size, flip=cfg.probe_flip,
                            seed=cfg.seed, log_every=cfg.log_every, ckpt_every=cfg.ckpt_every)

    def loader(part, split, fn, batch, shuffle=False, epoch=0, start=0):
        return row_loader(part[split]["data"], fn, part[split]["rows"], batch, cfg.workers, shuffle, cfg.seed, epoch,
                          pin, start)

    # ---- every backbone: features, heads, decoders, rollout maps ----
    backbone_info, cls_out, seg_out, align_out, maps = {}, {f: {} for f in cfg.fractions}, {}, {}, {}
    for name, path in specs:
        backbone = build_backbone(path, cfg).to(rt.device)
        size = backbone.cfg.img_size
        backbone_info[name] = {"path": path or "random init", "config": asdict(backbone.cfg),
                               "parameters": sum(p.numel() for p in backbone.parameters())}
        log(f"== {name}: {path or 'random init'} ({backbone_info[name]['parameters']:,} parameters, {size} px)")

        def features(split, flip=False, backbone=backbone):  # bound now: the loop deletes `backbone` later
            fn = partial(image_label_sample, size=size, flip=flip)
            return extract_features(backbone, loader(task, split, fn, cfg.batch_size), rt.device, rt.autocast, log,
                                    f"{name} {split}{' mirrored' if flip else ''} features")

        feats = {}
        if task is not None and ((classify and cfg.mode == "probe") or targets):
            feats = {s: features(s) for s in SPLITS}
            if classify and cfg.mode == "probe" and cfg.probe_flip:
                feats["train_flip"] = features("train", flip=True)
            if classify and cfg.mode == "probe" and cfg.probe_norm:
                # Statistics of every training image (no labels needed), so all label fractions share them.
                mu, sd = feats["train"].mean(0), feats["train"].std(0) + 1e-6
                probe_feats = {s: (f - mu) / sd for s, f in feats.items()}
            else:
                probe_feats = feats

        for frac, rows in subsets.items():
            tag = f"{name} {frac:g} ({len(rows)} train)"
            y_train = task["train"]["y"][rows]
            if cfg.mode == "probe":
                head, info = train_linear_probe(
                    probe_feats["train"][rows], y_train, probe_feats["val"], task["val"]["y"], cfg.task_type,
                    probe_cfg, n_classes, probe_feats["train_flip"][rows] if "train_flip" in feats else None,
                    rt.device, lambda line, tag=tag: log(f"probe {tag}: {line}"))
                with torch.no_grad():
                    p_val, p_test = (to_probabilities(head(probe_feats[s].to(rt.device)), cfg.task_type)
                                     for s in ("val", "test"))
            else:
                n_out = num_outputs(y_train, cfg.task_type, n_classes)
                train_part = {"train": {"data": task["train"]["data"], "rows": task["train"]["rows"][rows]}}
                train_fn = partial(image_label_sample, size=size, train=True)
                eval_fn = partial(image_label_sample, size=size)
                run = dict(backbone=name, checkpoint=path, fraction=frac, **{k: getattr(cfg, k) for k in RUN_OPTIONS})
                p_val, p_test, info = finetune_run(
                    run_file(out, name, frac), run, cfg.resume,
                    lambda: prepare_finetune(build_backbone(path, cfg), n_out, cfg.mode, cfg.seed),
                    lambda epoch, start: loader(train_part, "train", train_fn, cfg.batch_size, True, epoch, start),
                    loader(task, "val", eval_fn, cfg.batch_size), loader(task, "test", eval_fn, cfg.batch_size),
                    task["val"]["y"], cfg.task_type, probe_cfg, rt.device, rt.autocast,
                    lambda line, tag=tag: log(f"{cfg.mode} {tag}: {line}"))
            log(f"{cfg.mode} {tag}: best epoch {info['best_epoch']}, val AUROC {info['best_val_auroc']:.4f}")
            cls_out[frac][name] = {"p_val": p_val, "p_test": p_test, "n_train": len(rows),
                                   "best_epoch": info["best_epoch"], "best_val_auroc": info["best_val_auroc"]}

        for key, t in (targets or {}).items():
            res = alignment_probe(feats["train"].numpy(), t["train"], feats["test"].numpy(), t["test"],
                                  cfg.align_alpha)
            align_out.setdefault(key, {})[name] = res
            log(f"alignment {name} -> {key}: " + ", ".join(f"{k} {v:.4f}" for k, v in res["summary"].items()))

        if seg is not None:
            seg_cfg = SegConfig(epochs=cfg.seg_epochs, warmup_epochs=cfg.seg_warmup_epochs, lr=cfg.seg_lr,
                                weight_decay=cfg.seg_weight_decay, batch_size=cfg.seg_batch_size,
                                log_every=cfg.log_every)
            train_fn, eval_fn = partial(seg_item, size=size, train=True), partial(seg_item, size=size)
            decoder, info = train_segmentation(
                backbone, lambda epoch: loader(seg, "train", train_fn, seg_cfg.batch_size, True, epoch),
                loader(seg, "val", eval_fn, seg_cfg.batch_size), seg_cfg, rt.device, rt.autocast, cfg.seed,
                lambda line: log(f"segmentation {name}: {line}"))
            dice, iou = evaluate_segmentation(backbone, decoder, loader(seg, "test", eval_fn, seg_cfg.batch_size),
                                              rt.device, rt.autocast)
            seg_out[name] = {"dice": dice, "iou": iou, "best_epoch": info["best_epoch"],
                             "best_val_dice": info["best_val_dice"]}
            log(f"segmentation {name}: best epoch {info['best_epoch']}, test Dice {dice.mean():.4f} IoU "
                f"{iou.mean():.4f}")

        if cfg.rollout:
            part = task if task is not None else seg
            images = [part["test"]["data"][int(r)]["image"] for r in part["test"]["rows"][:cfg.rollout]]
            x = torch.stack([rollout_input(img, size, cfg.rollout_imagenet_norm) for img in images])
            maps[name] = {"images": images, "maps": rollout_map(backbone, x.to(rt.device)).float().cpu()}
        del backbone, feats

    # ---- scores with bootstrap intervals, paired differences vs the reference ----
    B, seed = cfg.bootstrap, cfg.seed
    # Not resume / overwrite (how, not what): a resumed evaluation writes the results.json of an uninterrupted one.
    config = {k: v for k, v in asdict(cfg).items() if k not in ("resume", "overwrite")}
    results = {"config": config, "reference": ref, "difference": f"<backbone> - {ref}",
               "interval": f"median and 2.5 / 97.5 percentiles over {B} bootstrap resamples of the test set",
               "backbones": backbone_info}
    md = ["# PaCX-MAE evaluation", "",
          "Backbones: " + ", ".join(f"{n} ({backbone_info[n]['path']})" for n in names) + f". Reference: {ref}.",
          f"Cells: median [2.5%, 97.5%] over {B} bootstrap resamples of the test set; differences are paired "
          "(same resamples).", ""]
    if classify:
        y_test = task["test"]["y"]
        skipped = single_class_columns(y_test, next(iter(cls_out[cfg.fractions[0]].values()))["p_test"],
                                       cfg.task_type)
        label_names = list(cfg.label_columns)
        if cfg.task_type == "multiclass":
            label_names = list(cfg.classes) or [str(k) for k in range(n_classes)]
        skipped_names = [label_names[c] for c in skipped]
        if skipped:
            log(f"warning: test AUROC skips {skipped_names}: one class only in the test split")
        task_name = cfg.task_name or Path(cfg.task_csv.split(",")[0]).stem
        section = {"task": task_name, "task_type": cfg.task_type, "mode": cfg.mode, "labels": label_names,
                   "auroc_skipped_test_columns": skipped_names, "fractions": {}}
        md += [f"## Classification: {task_name} ({cfg.task_type}, {cfg.mode})", ""]
        rows_md = []
        for frac in cfg.fractions:
            log(f"bootstrap: classification at {frac:g} of the labels, {B} resamples")
            runs = cls_out[frac]
            metric = {n: partial(classification_metrics, task=cfg.task_type,
                                 thresholds=tune_threshold(task["val"]["y"], runs[n]["p_val"], cfg.task_type))
                      for n in names}
            tested = {n: bootstrap_ci(metric[n], y_test, runs[n]["p_test"], B, seed) for n in names}
            delta = {n: paired_bootstrap(metric[n], y_test, runs[n]["p_test"], runs[ref]["p_test"], B, seed,
                                         metric_b=metric[ref]) for n in names if n != ref}
            section["fractions"][f"{frac:g}"] = {
                "n_train": runs[ref]["n_train"],
                "backbones": {n: {"test": tested[n], "best_epoch": runs[n]["best_epoch"],
                                  "best_val_auroc": runs[n]["best_val_auroc"]} for n in names},
                "delta": delta}
            for key in tested[ref]:
                rows_md.append(([f"{frac:.0%} (n={runs[ref]['n_train']})", key],
                                {n: tested[n][key] for n in names}, {n: d[key] for n, d in delta.items()}))
        results["classification"] = section
        md += table(rows_md, ["train labels", "metric"], names, ref) + [""]
        if skipped:
            md += [f"AUROC leaves out {', '.join(skipped_names)} (one class only in the test split).", ""]

    if seg_out:
        def seg_fn(n):
            return lambda i: {"dice": float(seg_out[n]["dice"][i].mean()), "iou": float(seg_out[n]["iou"][i].mean())}

        n_test = len(seg_out[ref]["dice"])
        tested = {n: bootstrap(seg_fn(n), n_test, B, seed) for n in names}
        delta = {n: bootstrap(lambda i, n=n: {k: v - seg_fn(ref)(i)[k] for k, v in seg_fn(n)(i).items()}, n_test,
                              B, seed) for n in names if n != ref}
        seg_name = cfg.seg_name or Path(cfg.seg_csv.split(",")[0]).stem
        results["segmentation"] = {
            "data": seg_name, "n_test": n_test, "delta": delta,
            "backbones": {n: {"test": tested[n], "best_epoch": seg_out[n]["best_epoch"],
                              "best_val_dice": seg_out[n]["best_val_dice"]} for n in names}}
        md += [f"## Segmentation: {seg_name} (frozen backbone, {n_test} test images)", ""]
        md += table([([k], {n: tested[n][k] for n in names}, {n: d[k] for n, d in delta.items()})
                     for k in ("dice", "iou")], ["metric"], names, ref) + [""]

    if align_out:
        results["alignment"] = {}
        md += ["## Physiology alignment (ridge probe from frozen CXR features)", ""]
        rows_md = []
        for key, per in align_out.items():
            t_test = targets[key]["test"]
            fns = {n: partial(summarize, t_test, per[n]["pred"], per[n]["rows"]) for n in names}
            tested = {n: bootstrap(fns[n], len(t_test), B, seed) for n in names}
            delta = {n: bootstrap(lambda i, n=n: {k: v - fns[ref](i)[k] for k, v in fns[n](i).items()},
                                  len(t_test), B, seed) for n in names if n != ref}
            baseline = random_pair_baseline(t_test, targets[key]["train"].mean(0, keepdims=True), seed)
            results["alignment"][key] = {"n_test": len(t_test), "random_pair_baseline": baseline,
                                         "backbones": {n: tested[n] for n in names}, "delta": delta}
            rows_md += [([key, k], {n: tested[n][k] for n in names}, {n: d[k] for n, d in delta.items()})
                        for k in tested[ref]]
        md += table(rows_md, ["target", "metric"], names, ref) + [""]
        md += ["Random-pair cosine baseline: " + "; ".join(
            f"{k} raw {v['random_pair_baseline']['random_pair_cosine']:.3f}, centred "
            f"{v['random_pair_baseline']['random_pair_cosine_centered']:.3f}"
            for k, v in results["alignment"].items()), ""]

    if maps:
        (out / "rollout").mkdir(exist_ok=True)
        S = maps[ref]["maps"].shape[-1]
        files = []
        for i, image in enumerate(maps[ref]["images"]):
            gray = rollout_input(image, S).mean(0).numpy()  # (S, S) in [0, 1]
            heat = {n: upsample_minmax(maps[n]["maps"][i:i + 1], S)[0].numpy() for n in names}
            tiles = [overlay(gray, np.zeros_like(gray), 0.0)] + [overlay(gray, heat[n]) for n in names]
            tiles += [difference_rgb(heat[n] - heat[ref]) for n in names if n != ref]
            files.append(str(out / "rollout" / f"{i:03d}.png"))
            save_row(files[-1], tiles)
        results["rollout"] = {"tiles": ["image"] + names + [f"{n} - {ref}" for n in names if n != ref],
                              "files": files}
        md += [f"Attention rollout: {len(files)} figures in rollout/ (tiles: image, " + ", ".join(names) +
               "".join(f", {n} − {ref}" for n in names if n != ref) + ").", ""]

    (out / "results.json").write_text(json.dumps(jsonable(results), indent=2))
    (out / "results.md").write_text("\n".join(md))
    log(f"done: {out / 'results.json'}, {out / 'results.md'}")


if __name__ == "__main__":
    main()
