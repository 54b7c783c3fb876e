"""The whole method on the built-in synthetic physiology world, in one command: Stage 1 (MAE and lab DAE) ->
frozen-encoder targets -> Stage 2 -> Stage 3 (random init vs MAE vs PaCX) -> figures.

    python -m pacx.world.demo --out_dir runs/demo                     # CPU, tiny ViT, a few minutes on 2 cores
    python -m pacx.world.demo --out_dir runs/demo_gpu --device cuda --nproc 4 --model small --n_train 8000 ...

Each step is the command line a user would type for their own data (printed before it runs), so this file is also
the worked example of the README. Everything lands in --out_dir: world/, mae/, labs/, distill/, eval_*/ (results.json,
results.md), figures/ and summary.md. What the synthetic world is and is not evidence of: see
`pacx.world.physiology` and
the README.
"""
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pacx.config import opt, parse_config
from pacx.errors import PacxError, exit_on_error

ROOT = Path(__file__).resolve().parents[2]
FINDINGS = "cardiomegaly,effusion,congestion,hyperkalemia,renal_failure"


@dataclass
class Config:
    out_dir: str = opt("runs/demo", "folder for everything the demo writes")
    n_train: int = opt(2000, "training patients of the synthetic world")
    n_val: int = opt(300, "validation patients")
    n_test: int = opt(500, "test patients")
    image_size: int = opt(64, "image side (the tiny ViT uses 64 px, 8 px patches)")
    model: str = opt("tiny", "ViT preset: tiny | small | base")
    mae_epochs: int = opt(40, "Stage-1 MAE epochs")
    mask_ratio: float = opt(0.75, "MAE mask ratio. The reference's 0.9 suits ViT-B at 224 px (196 patches, 19 kept); "
                                  "the tiny model's 64 patches would keep 6")
    dae_epochs: int = opt(40, "Stage-1 lab DAE epochs")
    distill_epochs: int = opt(20, "Stage-2 epochs")
    batch_size: int = opt(64, "global batch of every training stage")
    lr_scale: float = opt(8.0, "multiplier on the reference learning rates (tiny models, few epochs)")
    fractions: tuple[float, ...] = opt((0.01, 0.1, 1.0), "label fractions of the low-label sweep")
    bootstrap: int = opt(500, "bootstrap resamples of every interval")
    use_ecg: bool = opt(False, "distil from the ECG teacher too. Without --ecg_weights ECGFounder has random weights, "
                               "whose embeddings are nearly the same for every record (mean cosine 0.997 on this "
                               "world), so the demo leaves the ECG teacher out unless asked")
    ecg_weights: str = opt("", "12_lead_ECGFounder.pth, if you have it (implies a real ECG teacher)")
    seg_epochs: int = opt(3, "segmentation decoder epochs (reference: 50)")
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


def alignment_targets(world: Path, out: Path, labs_dae: Path, ecg_weights: str | None, with_ecg: bool) -> None:
    """Frozen lab (and ECG) embeddings of every patient, keyed by image path, for evaluate.py's alignment probe."""
    from pacx.data.tables import file_column, read_table
    from pacx.data.targets import read_lab_inputs, table_lab_targets, triplet_targets

    df = read_table(world / "images.csv")
    ids, train_ids = df["hadm_id"].tolist(), df.loc[df["split"] == "train", "hadm_id"].tolist()
    arrays = {"path": np.array(df["path"].tolist())}
    labs = read_lab_inputs(world / "labs.csv", "hadm_id", {}, str(labs_dae))
    if with_ecg:
        t = triplet_targets(world / "triplets.csv", np.arange(len(df)), "all", file_column(
            read_table(world / "triplets.csv"), "ecg_path", world, "", False), ids, train_ids, labs, ecg_weights,
            str(labs_dae), out / "targets", "cpu")
        arrays |= {"ecg": t["ecg"].numpy(), "labs": t["labs"].numpy()}
    else:
        arrays["labs"] = table_lab_targets(labs, ids, train_ids, str(labs_dae))
    np.savez(out / "align_targets.npz", **arrays)


@exit_on_error
def main(argv=None):
    cfg = parse_config(Config, argv, __doc__)
    out = Path(cfg.out_dir).resolve()
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise PacxError(f"{out}: not empty; pass --overwrite to replace the demo there")
    world, t0 = out / "world", time.perf_counter()
    common = ["--device", cfg.device, "--workers", str(cfg.workers), "--seed", str(cfg.seed),
              "--overwrite"]
    train = common + ["--batch_size", str(cfg.batch_size), "--log_every", "20"]

    use_ecg = cfg.use_ecg or bool(cfg.ecg_weights)
    run(["-m", "pacx.world.make", "--out_dir", str(world), "--n_train", str(cfg.n_train), "--n_val", str(cfg.n_val),
         "--n_test", str(cfg.n_test), "--image_size", str(cfg.image_size), "--seed", str(cfg.seed),
         "--formats", "images,segmentation,labs,npy" + (",wfdb" if use_ecg else "")])  # no retrieval splits
    # Stage 1a: the MAE on the training split's images only.
    run(["train_mae.py", "--data", str(world / "images.csv"), "--image_column", "path", "--split_column", "split",
         "--model", cfg.model, "--img_size", str(cfg.image_size), "--mask_ratio", str(cfg.mask_ratio),
         "--epochs", str(cfg.mae_epochs),
         "--warmup_epochs", str(max(1, cfg.mae_epochs // 10)), "--lr", str(1.5e-4 * cfg.lr_scale),
         "--out_dir", str(out / "mae"), *train], cfg.nproc)
    # Stage 1b: the lab DAE on the Symile-layout percentiles.
    run(["train_labs.py", "--data", str(world / "data_npy"), "--epochs", str(cfg.dae_epochs),
         "--warmup_steps", "50", "--out_dir", str(out / "labs"), *train], cfg.nproc)
    # Stage 2: distillation from the frozen lab encoder (and the ECG one when asked for; see --use_ecg).
    run(["train_distill.py", "--data", str(world / "data_npy"), "--init", str(out / "mae" / "last.pt"),
         "--labs_dae", str(out / "labs" / "last.pt"), "--targets_cache", str(out / "targets"),
         "--use_ecg", str(use_ecg), "--ecg_weights", cfg.ecg_weights,
         "--epochs", str(cfg.distill_epochs), "--warmup_epochs", str(max(1, cfg.distill_epochs // 10)),
         "--lr", str(1e-4 * cfg.lr_scale), "--out_dir", str(out / "distill"), *train], cfg.nproc)
    print("\n$ (python) pacx.world.demo.alignment_targets: frozen targets of every patient for the alignment probe",
          flush=True)
    alignment_targets(world, out, out / "labs" / "last.pt", cfg.ecg_weights or None, use_ecg)
    # Stage 3: image only. Three backbones, two physiology tasks, the low-label sweep, segmentation, alignment.
    backbones = f"random=,mae={out / 'mae' / 'last.pt'},pacx={out / 'distill' / 'encoder.pt'}"
    fractions = ",".join(str(f) for f in cfg.fractions)
    evaluate = ["evaluate.py", "--backbones", backbones, "--reference", "mae", "--model", cfg.model,
                "--task_csv", str(world / "images.csv"), "--image_column", "path", "--fractions", fractions,
                "--bootstrap", str(cfg.bootstrap), "--device", cfg.device, "--workers", str(cfg.workers),
                "--seed", str(cfg.seed), "--overwrite",  # as every stage: main() guards out_dir
                # A few hundred images: a smaller probe batch than the reference's 512 (else ~2 steps an epoch) and
                # standardised features (the tiny CLS features share a large offset; see evaluate.py --probe_norm).
                "--batch_size", "64", "--probe_norm"]
    run([*evaluate, "--task_name", "fluid_overload", "--label_columns", "fluid_overload", "--task_type", "binary",
         "--seg_csv", str(world / "segmentation.csv"), "--seg_epochs", str(cfg.seg_epochs),
         "--align_features", str(out / "align_targets.npz"),
         "--rollout", "4", "--out_dir", str(out / "eval_fluid")])
    run([*evaluate, "--task_name", "findings", "--label_columns", FINDINGS, "--task_type", "multilabel",
         "--out_dir", str(out / "eval_findings")])
    run(["visualize.py", "--what", "all", "--mae", str(out / "mae" / "last.pt"),
         "--pacx", str(out / "distill" / "encoder.pt"), "--images", str(world / "images"),
         "--results", f"{out / 'eval_fluid' / 'results.json'},{out / 'eval_findings' / 'results.json'}",
         "--logs", f"{out / 'mae'},{out / 'labs'},{out / 'distill'}", "--out_dir", str(out / "figures")])

    minutes = (time.perf_counter() - t0) / 60
    parts = [(out / d / "results.md").read_text() for d in ("eval_fluid", "eval_findings")]
    summary = "\n".join([f"# pacx demo on the synthetic physiology world ({minutes:.1f} min)", "", *parts])
    (out / "summary.md").write_text(summary)
    print("\n" + summary + f"\nEverything is in {out} (summary.md, figures/).", flush=True)


if __name__ == "__main__":
    main()
