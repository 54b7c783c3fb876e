"""The whole method on the built-in synthetic physiology world, in one command: the world -> Stage 1 (MAE, lab DAE,
and an ECG teacher trained on the world's ECG findings) -> the oracle report -> Stage 2 (real pairs, and the
shuffled-pairs control) -> Stage 3 (random init vs MAE vs PaCX vs PaCX-shuffled) -> figures -> summary.md.

    python -m pacx.world.demo --out_dir runs/demo              # CPU, tiny ViT, under 10 minutes on 2 cores
    python -m pacx.world.demo --out_dir runs/demo_gpu --device cuda --nproc 4 --model small --n_train 8000 ...

Each step is the command line a user would type for their own data (printed before it runs), so this file is also
the worked example of the README. Everything lands in --out_dir: world/ (with oracle.json), mae/, labs/,
ecg_teacher/, distill/, distill_shuffled/, eval_physiology/ and eval_anatomy/ (results.json, results.md),
figures/, timings.json and summary.md. What the world holds and what it is evidence of: `pacx.world.physiology`
and the README.

The ECG teacher (`pacx.world.ecg_teacher`, a narrow ECGFounder Net1D trained on the world's training ECGs) is read by
train_distill.py through --ecg_weights exactly as the release file `12_lead_ECGFounder.pth` would be.

Label groups (fixed from the oracle report on the validation split, before any test number was read):
"physiology" = fluid_overload, hyperkalemia, renal_failure, the labels the teachers explain far better than the
pixels do (validation AUROC from the teacher embeddings 0.91-0.996, from the pixels 0.62-0.79); "anatomy" =
cardiomegaly, effusion, congestion, drawn in the image (pixels 0.78-0.98).

Settings that differ from the reference, each chosen on the world's validation split (never on test): Stage 2 at
lr 3e-3 for 16 epochs (LoRA on the tiny ViT learns the world's shared physiology within 20 epochs only from about
3e-3; validation retrieval still rises slowly up to 30 epochs, the 10-minute budget stops it at 16); the
segmentation decoder at lr 3e-3 (at the reference 1e-4 its validation Dice is still 0 after 7 epochs), warmup 1,
up to 15 epochs with patience 3, on the first 400 training / 200 validation images (every test image).
"""
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pacx.config import opt, parse_config
from pacx.errors import PacxError, exit_on_error

ROOT = Path(__file__).resolve().parents[2]
TASKS = {"physiology": "fluid_overload,hyperkalemia,renal_failure", "anatomy": "cardiomegaly,effusion,congestion"}


@dataclass
class Config:
    out_dir: str = opt("runs/demo", "folder for everything the demo writes")
    n_train: int = opt(2000, "training patients of the synthetic world")
    n_val: int = opt(750, "validation patients (Symile-MIMIC's val size: retrieval intervals need a few hundred)")
    n_test: int = opt(500, "test patients")
    image_size: int = opt(64, "image side (the tiny ViT uses 64 px, 8 px patches)")
    model: str = opt("tiny", "ViT preset: tiny | small | base")
    mae_epochs: int = opt(40, "Stage-1 MAE epochs")
    mask_ratio: float = opt(0.75, "MAE mask ratio (the tiny model's 64 patches would keep 6 at the paper's 0.9)")
    dae_epochs: int = opt(40, "Stage-1 lab DAE epochs")
    ecg_teacher_epochs: int = opt(8, "epochs of the world ECG teacher (pacx.world.ecg_teacher)")
    ecg_weights: str = opt("", "12_lead_ECGFounder.pth, if you have it: replaces the world-trained ECG teacher")
    distill_epochs: int = opt(16, "Stage-2 epochs")
    distill_lr: float = opt(3e-3, "Stage-2 learning rate (reference 1e-4 for ViT-B; see the module docstring)")
    batch_size: int = opt(64, "global batch of every training stage")
    lr_scale: float = opt(8.0, "multiplier on the reference Stage-1 MAE learning rate (tiny model, few epochs)")
    control: bool = opt(True, "also run Stage 2 on shuffled pairs (the negative control) and evaluate its encoder")
    fractions: tuple[float, ...] = opt((0.01, 0.1, 1.0), "label fractions of the low-label sweep")
    bootstrap: int = opt(500, "bootstrap resamples of every interval")
    seg_epochs: int = opt(15, "segmentation decoder epochs at most (reference: 50)")
    seg_patience: int = opt(3, "stop the decoder once validation Dice has not improved for this many epochs")
    seg_warmup_epochs: float = opt(1.0, "segmentation warmup epochs (reference: 5)")
    seg_lr: float = opt(3e-3, "segmentation decoder learning rate (reference: 1e-4)")
    seg_train: int = opt(400, "training images of the segmentation decoder (the first of the split; 0 = all)")
    seg_val: int = opt(200, "validation images of the segmentation decoder (0 = all)")
    device: str = opt("auto", "auto | cpu | cuda")
    nproc: int = opt(1, "processes per training stage (>1: torchrun, DDP)")
    workers: int = opt(1, "data-loading workers per process")
    seed: int = opt(0, "seed of the world and of every stage")
    overwrite: bool = opt(False, "replace an existing demo in out_dir")


def run(cmd: list[str], nproc: int = 1) -> None:
    """Run one stage as its own process, as a user would, and stop the demo if it fails."""
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    f"--nproc_per_node={nproc}"]
    print("\n$ python " + " ".join(cmd), flush=True)
    if subprocess.run(launcher + cmd, cwd=ROOT).returncode != 0:
        raise PacxError(f"the step `python {cmd[0]}` failed (its message is above)")


def segmentation_subset(world: Path, n_train: int, n_val: int) -> Path:
    """segmentation.csv with only the first n_train training and n_val validation rows (0 = all) and every test row:
    the decoder runs on 16x the token grid, so on a CPU it costs several times the backbone per image."""
    import pandas as pd
    df = pd.read_csv(world / "segmentation.csv", dtype=str, keep_default_na=False)
    keep = [df[df["split"] == s].head(k if k else len(df)) for s, k in (("train", n_train), ("val", n_val))]
    path = world / "segmentation_demo.csv"  # beside the original: its image paths are relative to the world folder
    pd.concat(keep + [df[df["split"] == "test"]]).to_csv(path, index=False)
    return path


def alignment_targets(world: Path, out: Path, labs_dae: Path, ecg_weights: str, cache: Path) -> None:
    """Frozen lab and ECG embeddings of every patient, keyed by image path, for evaluate.py's alignment probe.

    Labs: the raw lab table through Stage 1b's saved percentiles and the DAE (`table_lab_targets`). ECG: the train
    and val rows are Stage 2's own targets (`symile_targets`: a cache hit after Stage 2); the test rows, which the
    demo's Symile folder does not hold, are encoded from the world's ECGs regenerated in memory (`make_world` is
    deterministic by seed). Both inputs reach the encoder through ECGFounder's preprocessing, which removes the
    Symile layout's per-record affine scaling (median baseline, per-lead z-score): the two routes agree to float
    rounding (tests/test_world_teachers.py)."""
    import torch

    from pacx.data.tables import read_table
    from pacx.data.targets import encode_ecg, read_lab_inputs, symile_targets, table_lab_targets
    from pacx.weights import load_ecg_encoder
    from pacx.world.physiology import make_world

    df = read_table(world / "images.csv")
    ids, train_ids = df["hadm_id"].tolist(), df.loc[df["split"] == "train", "hadm_id"].tolist()
    labs = read_lab_inputs(world / "labs.csv", "hadm_id", {}, str(labs_dae))
    arrays = {"path": np.array(df["path"].tolist()), "labs": table_lab_targets(labs, ids, train_ids, str(labs_dae))}
    hadm = df["hadm_id"].astype(np.int64).to_numpy()
    ecg = {}
    for split in ("train", "val"):
        d = world / "data_npy" / split
        t = symile_targets(d, split, ecg_weights, str(labs_dae), cache, torch.device("cpu"))
        ecg |= dict(zip(np.load(d / f"hadm_id_{split}.npy").tolist(), t["ecg"].numpy()))
    rest = [i for i, h in enumerate(hadm) if int(h) not in ecg]
    if rest:
        meta = json.loads((world / "world.json").read_text())
        w = make_world(meta["n_train"] + meta["n_val"] + meta["n_test"], meta["seed"], meta["image_size"])
        row_of = {int(h): i for i, h in enumerate(w.hadm_id)}
        emb = encode_ecg(w.ecg[[row_of[int(hadm[i])] for i in rest]], load_ecg_encoder(ecg_weights),
                         torch.device("cpu"))
        ecg |= dict(zip(hadm[rest].tolist(), emb))
    arrays["ecg"] = np.stack([ecg[int(h)] for h in hadm])
    np.savez(out / "align_targets.npz", **arrays)


@exit_on_error
def main(argv=None):
    cfg = parse_config(Config, argv, __doc__)
    out = Path(cfg.out_dir).resolve()
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise PacxError(f"{out}: not empty; pass --overwrite to replace the demo there")
    world, t0, timings = out / "world", time.perf_counter(), {}

    def timed(name, cmd, nproc=1):
        start = time.perf_counter()
        run(cmd, nproc)
        timings[name] = time.perf_counter() - start

    common = ["--device", cfg.device, "--workers", str(cfg.workers), "--seed", str(cfg.seed), "--overwrite"]
    train = common + ["--batch_size", str(cfg.batch_size), "--log_every", "20"]
    timed("world", ["-m", "pacx.world.make", "--out_dir", str(world), "--n_train", str(cfg.n_train),
                    "--n_val", str(cfg.n_val), "--n_test", str(cfg.n_test), "--image_size", str(cfg.image_size),
                    "--seed", str(cfg.seed), "--formats", "images,segmentation,labs,npy"])  # no retrieval splits
    # Stage 1a: the MAE on the training split's images only.
    timed("stage1_mae", ["train_mae.py", "--data", str(world / "images.csv"), "--image_column", "path",
                         "--split_column", "split", "--model", cfg.model, "--img_size", str(cfg.image_size),
                         "--mask_ratio", str(cfg.mask_ratio), "--epochs", str(cfg.mae_epochs),
                         "--warmup_epochs", str(max(1, cfg.mae_epochs // 10)), "--lr", str(1.5e-4 * cfg.lr_scale),
                         "--out_dir", str(out / "mae"), *train], cfg.nproc)
    # Stage 1b: the lab DAE on the Symile-layout percentiles.
    timed("stage1_labs_dae", ["train_labs.py", "--data", str(world / "data_npy"), "--epochs", str(cfg.dae_epochs),
                              "--warmup_steps", "50", "--out_dir", str(out / "labs"), *train], cfg.nproc)
    # Stage 1c: the ECG teacher, a Net1D trained on the training split's ECG findings (unless the real file is given).
    ecg_weights = cfg.ecg_weights
    if not ecg_weights:
        ecg_weights = str(out / "ecg_teacher" / "teacher.pth")
        timed("stage1_ecg_teacher", ["-m", "pacx.world.ecg_teacher", "--world", str(world), "--out", ecg_weights,
                                     "--epochs", str(cfg.ecg_teacher_epochs), "--seed", str(cfg.seed),
                                     "--overwrite"])
    labs_dae, cache = out / "labs" / "last.pt", out / "targets"
    # What a linear model can read from pixels / latent state / teachers; also fills the target cache of Stage 2.
    timed("oracle", ["-m", "pacx.world.oracle", "--world", str(world), "--labs_dae", str(labs_dae),
                     "--ecg_weights", ecg_weights, "--targets_cache", str(cache),
                     "--retrieval_batch", str(cfg.batch_size)])
    # Stage 2 from both frozen teachers; the control pairs each image with another patient's targets.
    distill = ["train_distill.py", "--data", str(world / "data_npy"), "--init", str(out / "mae" / "last.pt"),
               "--labs_dae", str(labs_dae), "--ecg_weights", ecg_weights, "--targets_cache", str(cache),
               "--epochs", str(cfg.distill_epochs), "--warmup_epochs", str(max(1, cfg.distill_epochs // 10)),
               "--lr", str(cfg.distill_lr), *train]
    runs = {"distill": out / "distill"} | ({"distill_shuffled": out / "distill_shuffled"} if cfg.control else {})
    timed("stage2_real", [*distill, "--out_dir", str(runs["distill"])], cfg.nproc)
    if cfg.control:
        timed("stage2_shuffled", [*distill, "--shuffle_pairs", "--out_dir", str(runs["distill_shuffled"])], cfg.nproc)
    print("\n$ (python) pacx.world.demo.alignment_targets: frozen targets of every patient for the alignment probe",
          flush=True)
    start = time.perf_counter()
    alignment_targets(world, out, labs_dae, ecg_weights, cache)
    seg_csv = segmentation_subset(world, cfg.seg_train, cfg.seg_val)
    timings["alignment_targets"] = time.perf_counter() - start
    # Stage 3: image only. Four backbones, two label groups, the low-label sweep with two probes, segmentation,
    # alignment to both teachers, attention rollout.
    backbones = f"random=,mae={out / 'mae' / 'last.pt'},pacx={out / 'distill' / 'encoder.pt'}"
    if cfg.control:
        backbones += f",pacx_shuffled={out / 'distill_shuffled' / 'encoder.pt'}"
    evaluate = ["evaluate.py", "--backbones", backbones, "--reference", "mae", "--model", cfg.model,
                "--task_csv", str(world / "images.csv"), "--image_column", "path", "--task_type", "multilabel",
                "--fractions", ",".join(str(f) for f in cfg.fractions), "--bootstrap", str(cfg.bootstrap),
                "--device", cfg.device, "--workers", str(cfg.workers), "--seed", str(cfg.seed), "--overwrite",
                # A few hundred images: a smaller probe batch than the reference's 512 (else ~2 steps an epoch),
                # standardised features (the tiny CLS features share a large offset; evaluate.py --probe_norm), and
                # the converged logistic regression beside the reference probe (a few dozen steps at 1% labels).
                "--batch_size", "64", "--probe_norm", "--logreg"]
    timed("stage3_physiology", [*evaluate, "--task_name", "physiology", "--label_columns", TASKS["physiology"],
                                "--seg_csv", str(seg_csv), "--seg_name", "lungs", "--seg_batch_size", "32",
                                "--seg_epochs", str(cfg.seg_epochs), "--seg_patience", str(cfg.seg_patience),
                                "--seg_warmup_epochs", str(cfg.seg_warmup_epochs), "--seg_lr", str(cfg.seg_lr),
                                "--align_features", str(out / "align_targets.npz"), "--rollout", "4",
                                "--out_dir", str(out / "eval_physiology")])
    timed("stage3_anatomy", [*evaluate, "--task_name", "anatomy", "--label_columns", TASKS["anatomy"],
                             "--out_dir", str(out / "eval_anatomy")])
    results = {task: out / f"eval_{task}" / "results.json" for task in TASKS}
    timed("figures", ["visualize.py", "--what", "all", "--mae", str(out / "mae" / "last.pt"),
                      "--pacx", str(out / "distill" / "encoder.pt"), "--images", str(world / "images"),
                      "--results", ",".join(str(p) for p in results.values()),
                      "--logs", f"{out / 'mae'},{out / 'labs'}", "--stage2", ",".join(str(p) for p in runs.values()),
                      "--out_dir", str(out / "figures")])
    write_summary(out, world, runs, results, timings, time.perf_counter() - t0)


def write_summary(out: Path, world: Path, runs: dict, results: dict, timings: dict, seconds: float) -> None:
    from pacx.world import summary
    from pacx.world.oracle import markdown

    (out / "timings.json").write_text(json.dumps({k: round(v, 1) for k, v in timings.items()}, indent=1))
    res = {task: json.loads(p.read_text()) for task, p in results.items()}
    parts = [f"# pacx demo on the synthetic physiology world ({seconds / 60:.1f} min)", "",
             *summary.stage2_section(runs), *summary.headline_section(res),
             *summary.segmentation_alignment_section(res["physiology"]),
             "## The world's oracle report (linear models, validation split)", "",
             markdown(json.loads((world / "oracle.json").read_text())), "", *summary.timing_section(timings)]
    text = "\n".join(parts)
    (out / "summary.md").write_text(text)
    print("\n" + text + f"\nEverything is in {out} (summary.md, figures/).", flush=True)


if __name__ == "__main__":
    main()
