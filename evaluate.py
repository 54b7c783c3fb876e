r"""Stage 3: compare backbones downstream - classification (linear probe, full or LoRA fine-tune, at several label
fractions), segmentation, the physiology alignment probe and attention rollout - with 95% bootstrap intervals and
paired differences against a reference backbone.

METHOD.md "Stage 3": Linear(D, C) on the CLS feature; probe AdamW 3e-3 wd 0.01 cosine 30 epochs batch 512, fine-tune
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
    python evaluate.py --backbones ... --task TB --data_root shenzhen/   # a paper benchmark by name (TASKS_README)

A CSV argument is one file with a split column (train / val / test) or three comma-separated files train,val,test.
A random-init backbone (`random=`) takes the architecture of the others (their checkpoints' configs, or --model for
files without one), so the comparison is between weights, not model sizes; others that differ among themselves leave
it no architecture to take and are refused. A label fraction whose training rows cannot hold a positive and a
negative of every label is reported as not computable (pacx/eval/lowlabel.py).
Writes out_dir/results.json (every number with its interval) and out_dir/results.md (paper-style tables). Fine-tuning
runs checkpoint themselves in out_dir/finetune/ (pacx.eval.finetune): after a crash, --resume continues bit-identically.
"""
import json
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from pacx import rundir
from pacx.config import opt, parse_config
from pacx.data.datasets import ImageCSV, SegmentationCSV
from pacx.data.tasks import BENCHMARKS, benchmark, resolve
from pacx.dist import AMP_HELP, init_runtime
from pacx.errors import PacxError, exit_on_error
from pacx.eval import report
from pacx.eval.alignment import alignment_probe
from pacx.eval.finetune import (Classifier, finetune_run, prepare_eval_dir, prepare_finetune, previous_evaluation,
                                run_file)
from pacx.eval.lowlabel import low_label_subsets
from pacx.eval.metrics import TASKS
from pacx.eval.probe import (ProbeConfig, extract_features, image_label_sample, logistic_probe, num_outputs,
                             row_loader, standardize, to_probabilities, train_linear_probe)
from pacx.eval.rollout import rollout_input, rollout_map, save_rollout_figures
from pacx.eval.segmentation import SegConfig, evaluate_segmentation, seg_item, train_segmentation
from pacx.eval.splits import SPLITS, Part, load_targets, read_splits
from pacx.loader import cap_workers
from pacx.models.vit import ViTConfig, VisionTransformer
from pacx.weights import load_backbone, read_checkpoint, vit_config, with_img_size

# The ViTConfig fields that make two backbones the same model to compare (LayerNorm eps, say, does not).
ARCHITECTURE = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio", "num_registers")
# What a fine-tuning run's file must have been written with to be resumed (with the backbone and label fraction).
RUN_OPTIONS = ("model", "img_size", "task", "data_root", "task_csv", "image_column", "image_root", "label_columns",
               "task_type", "classes", "split_column", "mode", "finetune_epochs", "finetune_lr", "backbone_lr_scale",
               "stage2_finetune", "norm_eps", "weight_decay", "batch_size", "amp", "seed")


@dataclass
class Config:
    backbones: tuple[str, ...] = opt(("random=",), "comma-separated name=checkpoint (pacx, official MAE, timm, PaCX "
                                                   "Lightning); an empty path is a random init")
    reference: str = opt("", "backbone the others are compared to by paired bootstrap (default: the first)")
    model: str = opt("base", "ViT preset for random init and checkpoints without a config: base | small | tiny")
    img_size: int = opt(0, "input size for every backbone (0: each backbone's own, 224 for base)")
    norm_eps: float = opt(0.0, "LayerNorm eps of every backbone (0: the checkpoint's own; an original Stage-2 file, "
                               "which records none, is read with 1e-5 as the original evaluates it)")
    task: str = opt("", f"a paper benchmark by name, read from --data_root: {', '.join(BENCHMARKS)} (sets the "
                        f"images, splits, task type, labels and classes; instead of --task_csv / --seg_csv)")
    data_root: str = opt("", "--task: the folder its public release unpacks to (pacx/data/tasks.py names each)")
    task_csv: tuple[str, ...] = opt((), "classification images: one CSV with --split_column, or train.csv,val.csv,"
                                        "test.csv")
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
    probe_epochs: int = opt(30, "linear-probe epochs")
    probe_lr: float = opt(3e-3, "linear-probe learning rate")
    finetune_epochs: int = opt(40, "finetune / lora epochs")
    finetune_lr: float = opt(3e-4, "finetune / lora head learning rate")
    backbone_lr_scale: float = opt(0.1, "finetune / lora: backbone lr = this x head lr")
    stage2_finetune: str = opt("head", "finetune of a Stage-2 (PaCX) backbone: head (the original's behaviour: its "
                                       "base weights stay frozen, a quirk) | full (trained like every other backbone)")
    weight_decay: float = opt(0.01, "AdamW weight decay (none on biases and norms)")
    batch_size: int = opt(512, "classification batch size (also for feature extraction)")
    probe_flip: bool = opt(True, "probe: train on mirrored images half of the time, as the reference")
    probe_norm: bool = opt(False, "probe: standardise each feature by the training split's mean / std first (the MAE "
                                  "paper's BatchNorm without affine); off: the reference's plain Linear")
    logreg: bool = opt(False, "probe: also fit a converged logistic regression (scikit-learn) on the same features, "
                              "its L2 strength chosen on validation; reported as a second table")
    seg_csv: tuple[str, ...] = opt((), "segmentation CSV(s) with img_path, mask_path (and --split_column)")
    seg_name: str = opt("", "segmentation data set name in the tables (default: the CSV file name)")
    seg_epochs: int = opt(50, "segmentation decoder epochs")
    seg_warmup_epochs: float = opt(5.0, "segmentation warmup epochs")
    seg_patience: int = opt(0, "stop the decoder after this many epochs without a better validation Dice (0: train "
                               "every --seg_epochs, the reference)")
    seg_lr: float = opt(1e-4, "segmentation AdamW learning rate")
    seg_weight_decay: float = opt(1e-4, "segmentation AdamW weight decay")
    seg_batch_size: int = opt(256, "segmentation batch size (the original's 256; it also sets the batches of the "
                                   "original's batch-pooled test Dice, reported beside the per-image one)")
    align_features: str = opt("", ".npz with 'ecg' (N, 1024) and/or 'labs' (N, 256) targets, one row per task CSV "
                                  "row (three CSVs: train, val, test rows in order), or matched by a 'path' array "
                                  "of image-column values")
    align_alpha: float = opt(10.0, "ridge alpha of the alignment probe")
    rollout: int = opt(0, "save attention-rollout figures of the first N test images (task CSV, else seg CSV)")
    rollout_imagenet_norm: bool = opt(False, "normalise rollout inputs (the reference feeds [0, 1] pixels: quirk)")
    bootstrap: int = opt(500, "bootstrap resamples of the test set")
    workers: int = opt(4, "data-loading processes")
    device: str = opt("auto", "auto | cpu | cuda")
    amp: str = opt("auto", AMP_HELP)
    seed: int = opt(42, "seed for random backbones, subsets, heads, batch order and bootstrap resamples (the "
                        "original's Stage-3 seed)")
    out_dir: str = opt("runs/eval", "folder for results.json, results.md, rollout/ and finetune/ (run checkpoints)")
    resume: bool = opt(False, "continue the evaluation in out_dir: finished fine-tuning runs are reused, an "
                              "interrupted one goes on from its checkpoint, the rest is recomputed")
    overwrite: bool = opt(False, "replace an evaluation already in out_dir")
    ckpt_every: int = opt(0, "finetune / lora: also checkpoint every N steps (0: at the end of each epoch only)")
    log_every: int = opt(10, "progress line every N steps (fine-tune, segmentation) / epochs (probe)")


def check(cfg: Config) -> None:
    if cfg.task_type not in TASKS:
        raise PacxError(f"--task_type: expected one of {TASKS}, got {cfg.task_type!r}")
    if cfg.mode not in ("probe", "finetune", "lora"):
        raise PacxError(f"--mode: expected probe, finetune or lora, got {cfg.mode!r}")
    if cfg.stage2_finetune not in ("head", "full"):
        raise PacxError(f"--stage2_finetune: expected head or full, got {cfg.stage2_finetune!r}")
    vit_config(cfg.model)  # an unknown preset is refused before any work
    task_kind = benchmark(cfg.task).task_type if cfg.task else None  # an unknown name is refused before any work
    if task_kind and (cfg.task_csv or cfg.seg_csv or cfg.label_columns or cfg.classes or
                      cfg.task_type != Config.task_type):
        raise PacxError(f"--task {cfg.task} sets the images, splits, task type, labels and classes itself: leave out "
                        f"--task_csv, --seg_csv, --label_columns, --classes and --task_type")
    if bool(cfg.task) != bool(cfg.data_root):
        raise PacxError("--task NAME and --data_root DIR go together (the benchmark and where its release lies)")
    if not (cfg.task_csv or cfg.seg_csv or cfg.task):
        raise PacxError("nothing to evaluate: give --task and --data_root, or --task_csv and/or --seg_csv (see --help)")
    if cfg.align_features and not (cfg.task_csv or task_kind not in (None, "segmentation")):
        raise PacxError("--align_features needs --task_csv or a classification --task (the images whose rows the "
                        "targets follow)")
    if any(not 0 < f <= 1 for f in cfg.fractions):
        raise PacxError(f"--fractions: expected values in (0, 1], got {cfg.fractions}")
    if min(cfg.probe_epochs, cfg.finetune_epochs) < 1 or cfg.ckpt_every < 0:
        raise PacxError(f"--probe_epochs / --finetune_epochs / --ckpt_every: expected >= 1 / >= 1 / >= 0, got "
                        f"{cfg.probe_epochs} / {cfg.finetune_epochs} / {cfg.ckpt_every}")


def parse_backbones(specs: tuple[str, ...], reference: str) -> tuple[list[tuple[str, str]], str]:
    """[(name, checkpoint path)] from ("name=path", ...) (an empty path: random init), and the reference's name."""
    out = []
    for part in (p.strip() for p in specs if p.strip()):
        name, sep, path = part.partition("=")
        if not sep or not name.strip():
            raise PacxError(f"--backbones: expected name=checkpoint (empty checkpoint: random init), got {part!r}")
        out.append((name.strip(), path.strip()))
    names = [n for n, _ in out]
    if not out or len(set(names)) != len(names):
        raise PacxError(f"--backbones: expected distinct names, got {names}")
    ref = reference or names[0]
    if ref not in names:
        raise PacxError(f"--reference {ref!r} is not one of the backbones {names}")
    return out, ref


def random_architecture(backbones: list[tuple[str, str]], ref: str, cfg: Config, log) -> ViTConfig:
    """The config of the random-init (empty path) backbones: the architecture of the others, as `load_vit` builds
    them (a checkpoint's own config, else the --model preset; --img_size for all), taken from the reference when it
    has a checkpoint. Others of different architectures leave no single one to take: refused. No others: --model."""
    others = {name: with_img_size(read_checkpoint(path).vit_config() or vit_config(cfg.model), cfg.img_size)
              for name, path in backbones if path}
    if not others:
        return vit_config(cfg.model, cfg.img_size)

    def describe(c: ViTConfig) -> str:
        return f"{c.img_size} px, patch {c.patch_size}, width {c.embed_dim}, depth {c.depth}, {c.num_heads} heads"

    shapes = {tuple(getattr(c, f) for f in ARCHITECTURE) for c in others.values()}
    if len(shapes) > 1:
        raise PacxError("--backbones: a random-init backbone (empty path) takes the architecture of the others, but "
                        "they differ (" + "; ".join(f"{n}: {describe(c)}" for n, c in others.items()) + "); compare "
                        "those without the random one, or evaluate it with each in its own run")
    source = ref if ref in others else next(iter(others))
    log(f"random init: the architecture of {source} ({describe(others[source])})")
    return others[source]


def build_backbone(path: str, cfg: Config, random_cfg: ViTConfig) -> tuple[VisionTransformer, bool]:
    """The backbone of checkpoint `path` and whether it is a Stage-2 (PaCX) encoder, or a random init of
    `random_cfg` (seeded: the same in every run)."""
    torch.manual_seed(cfg.seed)
    if not path:
        return VisionTransformer(random_cfg), False
    model, ckpt = load_backbone(path, cfg.model, cfg.img_size, cfg.norm_eps or None)
    return model, ckpt.stage2


def finetune_model(path: str, n_out: int, cfg: Config, random_cfg: ViTConfig) -> Classifier:
    backbone, stage2 = build_backbone(path, cfg, random_cfg)
    return prepare_finetune(backbone, n_out, cfg.mode, cfg.seed, head_only=stage2 and cfg.stage2_finetune == "head")


def probe_config(cfg: Config) -> ProbeConfig:
    epochs, lr = (cfg.probe_epochs, cfg.probe_lr) if cfg.mode == "probe" else (cfg.finetune_epochs, cfg.finetune_lr)
    return ProbeConfig(epochs=epochs, lr=lr, backbone_lr_scale=cfg.backbone_lr_scale, weight_decay=cfg.weight_decay,
                       batch_size=cfg.batch_size, flip=cfg.probe_flip, seed=cfg.seed, log_every=cfg.log_every,
                       ckpt_every=cfg.ckpt_every)


def load_task(cfg: Config, log) -> dict[str, Part]:
    """The classification images of each split with their labels (None without --label_columns)."""
    splits = read_splits(cfg.task_csv, cfg.split_column, cfg.image_column)
    sets = {p: ImageCSV(p, cfg.image_column, list(cfg.label_columns), cfg.image_root or None, cfg.task_type,
                        cfg.classes or None) for p in {s["csv"] for s in splits.values()}}
    task = {s: Part(sets[info["csv"]], info["rows"], info["keys"], info["offset"]) for s, info in splits.items()}
    if cfg.label_columns:
        for part in task.values():
            part.y = part.data.labels[part.rows]  # (N, C) float 0/1, or (N,) int64 class ids
    log(f"task {','.join(cfg.task_csv)}: " + ", ".join(f"{s} {len(p.rows)}" for s, p in task.items()))
    return task


def load_segmentation(cfg: Config, log) -> dict[str, Part]:
    splits = read_splits(cfg.seg_csv, cfg.split_column, "img_path")
    sets = {p: SegmentationCSV(p, cfg.image_root or None) for p in {s["csv"] for s in splits.values()}}
    seg = {s: Part(sets[info["csv"]], info["rows"], info["keys"], info["offset"]) for s, info in splits.items()}
    log(f"segmentation {','.join(cfg.seg_csv)}: " + ", ".join(f"{s} {len(p.rows)}" for s, p in seg.items()))
    return seg


def n_classes_of(cfg: Config, task: dict[str, Part]) -> int | None:
    if cfg.task_type != "multiclass":
        return None
    return len(cfg.classes) if cfg.classes else int(max(p.y.max() for p in task.values())) + 1


def loader(part: Part, fn, batch: int, cfg: Config, rt, shuffle: bool = False, epoch: int = 0, start: int = 0):
    return row_loader(part.data, fn, part.rows, batch, cfg.workers, shuffle, cfg.seed, epoch,
                      rt.device.type == "cuda", start)


def task_features(name: str, backbone: VisionTransformer, task: dict[str, Part], cfg: Config, rt) -> dict:
    """CLS features of every split (and of the mirrored training images when the probe flips), cached in memory."""
    def features(split: str, flip: bool = False):
        fn = partial(image_label_sample, size=backbone.cfg.img_size, flip=flip)
        return extract_features(backbone, loader(task[split], fn, cfg.batch_size, cfg, rt), rt.device, rt.autocast,
                                rt.print0, f"{name} {split}{' mirrored' if flip else ''} features")

    feats = {s: features(s) for s in SPLITS}
    if cfg.label_columns and cfg.mode == "probe" and cfg.probe_flip:
        feats["train_flip"] = features("train", flip=True)
    return feats


def probe(feats: dict, task: dict[str, Part], rows: np.ndarray, n_classes, cfg: Config, rt, tag: str):
    """Linear probe on the cached features of the training `rows`: (p_val, p_test, summary)."""
    head, info = train_linear_probe(
        feats["train"][rows], task["train"].y[rows], feats["val"], task["val"].y, cfg.task_type, probe_config(cfg),
        n_classes, feats["train_flip"][rows] if "train_flip" in feats else None, rt.device,
        lambda line: rt.print0(f"probe {tag}: {line}"))
    with torch.no_grad():
        p_val, p_test = (to_probabilities(head(feats[s].to(rt.device)), cfg.task_type) for s in ("val", "test"))
    return p_val, p_test, info


def finetune(name: str, path: str, size: int, frac: float, task: dict[str, Part], rows: np.ndarray, n_classes,
             cfg: Config, rt, out: Path, tag: str, random_cfg: ViTConfig):
    """One resumable fine-tuning run (full or LoRA) of the backbone `path` (input `size`) on the training `rows`:
    (p_val, p_test, summary)."""
    train = Part(task["train"].data, task["train"].rows[rows], [])
    train_fn, eval_fn = partial(image_label_sample, size=size, train=True), partial(image_label_sample, size=size)
    n_out = num_outputs(task["train"].y[rows], cfg.task_type, n_classes)
    run = dict(backbone=name, checkpoint=path, fraction=frac, **{k: getattr(cfg, k) for k in RUN_OPTIONS})
    return finetune_run(
        run_file(out, name, frac), run, cfg.resume,
        make_model=lambda: finetune_model(path, n_out, cfg, random_cfg),
        train_loader=lambda epoch, start: loader(train, train_fn, cfg.batch_size, cfg, rt, True, epoch, start),
        val_loader=loader(task["val"], eval_fn, cfg.batch_size, cfg, rt),
        test_loader=loader(task["test"], eval_fn, cfg.batch_size, cfg, rt), y_val=task["val"].y,
        task=cfg.task_type, cfg=probe_config(cfg), device=rt.device, autocast=rt.autocast,
        log=lambda line: rt.print0(f"{cfg.mode} {tag}: {line}"))


def segment(name: str, backbone: VisionTransformer, seg: dict[str, Part], cfg: Config, rt) -> dict:
    """Train the decoder on the frozen backbone; per-image test Dice / IoU of the best validation epoch."""
    seg_cfg = SegConfig(epochs=cfg.seg_epochs, warmup_epochs=cfg.seg_warmup_epochs, lr=cfg.seg_lr,
                        weight_decay=cfg.seg_weight_decay, batch_size=cfg.seg_batch_size, patience=cfg.seg_patience,
                        log_every=cfg.log_every)
    size = backbone.cfg.img_size
    train_fn, eval_fn = partial(seg_item, size=size, train=True), partial(seg_item, size=size)
    decoder, info = train_segmentation(
        backbone, lambda epoch: loader(seg["train"], train_fn, seg_cfg.batch_size, cfg, rt, True, epoch),
        loader(seg["val"], eval_fn, seg_cfg.batch_size, cfg, rt), seg_cfg, rt.device, rt.autocast, cfg.seed,
        lambda line: rt.print0(f"segmentation {name}: {line}"))
    dice, iou, pooled = evaluate_segmentation(backbone, decoder, loader(seg["test"], eval_fn, seg_cfg.batch_size,
                                                                        cfg, rt), rt.device, rt.autocast)
    rt.print0(f"segmentation {name}: best epoch {info['best_epoch']}, test Dice {dice.mean():.4f} IoU "
              f"{iou.mean():.4f}")
    return {"dice": dice, "iou": iou, "batch_pooled": pooled, "best_epoch": info["best_epoch"],
            "best_val_dice": info["best_val_dice"]}


def evaluate_backbone(name: str, path: str, task, seg, targets, subsets: dict, cfg: Config, rt, out: Path,
                      random_cfg: ViTConfig) -> dict:
    """Everything measured on one backbone: classification at each label fraction, alignment, segmentation and the
    rollout maps (the report turns them into intervals and differences)."""
    backbone = build_backbone(path, cfg, random_cfg)[0].to(rt.device)
    params = sum(p.numel() for p in backbone.parameters())
    result = {"info": {"path": path or "random init", "config": asdict(backbone.cfg), "parameters": params},
              "classification": {}, "alignment": {}}
    rt.print0(f"== {name}: {path or 'random init'} ({params:,} parameters, {backbone.cfg.img_size} px)")
    probing = bool(cfg.label_columns) and cfg.mode == "probe"
    feats = task_features(name, backbone, task, cfg, rt) if task is not None and (probing or targets) else {}
    # --probe_norm: statistics of every training image (no labels needed), so all label fractions share them.
    probe_feats = standardize(feats, feats["train"]) if probing and cfg.probe_norm else feats
    n_classes = n_classes_of(cfg, task) if subsets else None
    for frac, rows in subsets.items():
        tag = f"{name} {frac:g} ({len(rows)} train)"
        p_val, p_test, info = (probe(probe_feats, task, rows, n_classes, cfg, rt, tag) if probing else
                               finetune(name, path, backbone.cfg.img_size, frac, task, rows, n_classes, cfg, rt, out,
                                        tag, random_cfg))
        rt.print0(f"{cfg.mode} {tag}: best epoch {info['best_epoch']}, val AUROC {info['best_val_auroc']:.4f}")
        result["classification"][frac] = {"p_val": p_val, "p_test": p_test, "n_train": len(rows),
                                          "best_epoch": info["best_epoch"], "best_val_auroc": info["best_val_auroc"]}
        if probing and cfg.logreg:
            p_val, p_test, info = logistic_probe(feats["train"][rows].numpy(), task["train"].y[rows],
                                                 feats["val"].numpy(), task["val"].y, feats["test"].numpy(),
                                                 cfg.task_type, cfg.seed)
            rt.print0(f"logistic regression {tag}: C {info['C']:g}, val AUROC {info['best_val_auroc']:.4f}")
            result.setdefault("logreg", {})[frac] = {"p_val": p_val, "p_test": p_test, "n_train": len(rows),
                                                     "best_epoch": -1, "best_val_auroc": info["best_val_auroc"]}
    for key, t in (targets or {}).items():
        res = alignment_probe(feats["train"].numpy(), t["train"], feats["test"].numpy(), t["test"], cfg.align_alpha)
        result["alignment"][key] = res
        rt.print0(f"alignment {name} -> {key}: " + ", ".join(f"{k} {v:.4f}" for k, v in res["summary"].items()))
    if seg is not None:
        result["segmentation"] = segment(name, backbone, seg, cfg, rt)
    if cfg.rollout:
        part = task["test"] if task is not None else seg["test"]
        images = [part.data[int(r)]["image"] for r in part.rows[:cfg.rollout]]
        x = torch.stack([rollout_input(img, backbone.cfg.img_size, cfg.rollout_imagenet_norm) for img in images])
        result["rollout"] = {"images": images, "maps": rollout_map(backbone, x.to(rt.device)).float().cpu()}
    return result


def write_report(cfg: Config, outputs: dict, task, targets, ref: str, out: Path, log, skipped: dict) -> None:
    """results.json and results.md from every backbone's outputs (pacx.eval.report)."""
    names, B = list(outputs), cfg.bootstrap
    # Not resume / overwrite (how, not what): a resumed evaluation writes the results.json of an uninterrupted one.
    config = {k: v for k, v in asdict(cfg).items() if k not in ("resume", "overwrite")}
    infos = {n: o["info"] for n, o in outputs.items()}
    results = {"config": config, "reference": ref, "difference": f"<backbone> - {ref}",
               "interval": f"median and 2.5 / 97.5 percentiles over {B} bootstrap resamples of the test set",
               "backbones": infos}
    md = report.header(infos, ref, B)
    if any(o["classification"] for o in outputs.values()) or skipped:
        labels = list(cfg.label_columns) if cfg.task_type != "multiclass" else \
            list(cfg.classes) or [str(k) for k in range(n_classes_of(cfg, task))]
        info = {"name": cfg.task_name or Path(cfg.task_csv[0]).stem, "type": cfg.task_type, "mode": cfg.mode,
                "labels": labels}
        runs = {f: {n: outputs[n]["classification"][f] for n in names} for f in cfg.fractions if f not in skipped}
        results["classification"], lines = report.classification_section(runs, task["val"].y, task["test"].y, info,
                                                                         names, ref, B, cfg.seed, log, skipped)
        md += lines
        if "logreg" in outputs[ref]:
            runs = {f: {n: outputs[n]["logreg"][f] for n in names} for f in cfg.fractions}
            results["classification_logreg"], lines = report.classification_section(
                runs, task["val"].y, task["test"].y, {**info, "mode": "converged logistic-regression probe"}, names,
                ref, B, cfg.seed, log)
            md += lines
    if cfg.seg_csv:
        results["segmentation"], lines = report.segmentation_section(
            {n: o["segmentation"] for n, o in outputs.items()}, cfg.seg_name or Path(cfg.seg_csv[0]).stem, names,
            ref, B, cfg.seed)
        md += lines
    if targets:
        runs = {k: {n: outputs[n]["alignment"][k] for n in names} for k in targets}
        results["alignment"], lines = report.alignment_section(runs, targets, names, ref, B, cfg.seed)
        md += lines
    if cfg.rollout:
        files = save_rollout_figures(out / "rollout", outputs[ref]["rollout"]["images"],
                                     {n: o["rollout"]["maps"] for n, o in outputs.items()}, ref)
        results["rollout"], lines = report.rollout_section(files, names, ref)
        md += lines
    (out / "results.json").write_text(json.dumps(report.jsonable(results), indent=2))
    (out / "results.md").write_text("\n".join(md))
    log(f"done: {out / 'results.json'}, {out / 'results.md'}")


@exit_on_error
def main(argv=None):
    cfg = parse_config(Config, argv, __doc__)
    check(cfg)
    rt = init_runtime(cfg.device, cfg.seed, cfg.amp)
    cfg = replace(cfg, workers=cap_workers(cfg.workers, rt.print0))
    out = prepare_eval_dir(cfg.out_dir, cfg.resume, cfg.overwrite)
    if cfg.task:  # the benchmark's split table, written into out_dir, read as a --task_csv / --seg_csv would be
        cfg = replace(cfg, **resolve(cfg.task, cfg.data_root, out))
    backbones, ref = parse_backbones(cfg.backbones, cfg.reference)

    task = load_task(cfg, rt.print0) if cfg.task_csv else None
    seg = load_segmentation(cfg, rt.print0) if cfg.seg_csv else None
    targets = load_targets(cfg.align_features, task) if cfg.align_features else None
    if cfg.overwrite:  # the inputs are read and checked: only now may the previous evaluation go
        rundir.clear(previous_evaluation(out))
    classify = task is not None and bool(cfg.label_columns)
    subsets, skipped = low_label_subsets(task["train"].y, cfg.fractions, cfg.seed, list(cfg.label_columns),
                                         rt.print0) if classify else ({}, {})
    random_cfg = random_architecture(backbones, ref, cfg, rt.print0) if any(not p for _, p in backbones) else None

    outputs = {name: evaluate_backbone(name, path, task, seg, targets, subsets, cfg, rt, out, random_cfg)
               for name, path in backbones}
    write_report(cfg, outputs, task, targets, ref, out, rt.print0, skipped)


if __name__ == "__main__":
    main()
