"""An ECG teacher for the synthetic world: a small ECGFounder Net1D trained, as ECGFounder was, by multi-label
binary cross-entropy on ECG findings, and saved in the layout of `12_lead_ECGFounder.pth`.

Why: ECGFounder (PKUDigitalHealth/ECGFounder, METHOD.md "Stage 1c") is a Net1D trained supervised on 150 ECG labels;
its 1024-d embedding carries what those labels need. Without the release file pacx's ECG encoder has random
weights, whose embeddings are nearly the same for every record, so the demo had no ECG teacher. This module trains
the same architecture, narrower for a CPU, on the world's own ECG findings, so that Stage 2 can read it through
`--ecg_weights` exactly as it reads the real file (`pacx.data.targets`: Symile npy ECG -> `symile_ecg_to_ecgfounder` ->
`ecgfounder_preprocess` -> `ECGEncoder` -> time-mean of the last stage).

Findings (the labels, from the world's ECG parameters in world.json `ecg_<name>`, as a reader of the tracing would
give them; thresholds in mV / s / bpm):
  clinical    sinus_tachycardia (rate > 100), sinus_bradycardia (rate < 60), lvh_voltage (R > 1.7),
              low_voltage (R < 1.0), wide_qrs (QRS > 0.10), peaked_t (T > 0.45), p_pulmonale (P > 0.16),
              broad_p (P width > 0.026), long_pr (PR > 0.18), left_axis_deviation (QRS turned by < -10 deg)
  graded      for each parameter (rate, QRS width, R, T amplitude, T width, P amplitude, P width, PR, axis):
              above the 20 / 40 / 60 / 80 % quantiles of the TRAINING split (an ordinal code, so the embedding
              carries each parameter as a graded quantity, not only its clinical cut-off); a quantile that no
              training record exceeds is left out (T width sits at its normal value for most patients)
Recipe (defaults; sized for CPU time, one configuration tried: on the demo's world the validation macro AUROC over
the findings plateaus at 0.93 by epoch 6 of 8, written per epoch in teacher.json): Net1D with in_channels 12,
base_filters 8, filter_list (16, 16, 32, 32, 64, 64, 128), one block per stage, kernel 16, stride 2, groups_width 8,
no BN, no dropout (embedding width 128, ~126 k parameters); input = ECGFounder's preprocessing of the Symile array;
training on random crops of `crop` samples (the network is fully convolutional with a time-mean, and every finding
is visible in any few seconds), evaluation on the full 10 s; AdamW lr 3e-3, wd 1e-2, betas (0.9, 0.999), batch 32,
linear warmup 1 epoch then cosine to 0, per step (`pacx.optim`, every parameter decayed as torch's AdamW does); BCE-
with-logits averaged over findings.
Only the TRAINING split's ECGs and findings train it; the validation split scores it.

    python -m pacx.world.ecg_teacher --world runs/demo/world --out runs/demo/ecg_teacher/teacher.pth

Writes the checkpoint ({'state_dict': Net1D keys with `dense.*`, 'findings': names, 'thresholds', 'config'})
and teacher.json beside it (validation AUROC per finding, timings). Notation: N = records, F = findings,
L = samples.
"""
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pacx.checkpoint import save_atomic
from pacx.config import opt, parse_config
from pacx.data.ecg_io import ecgfounder_preprocess, symile_ecg_to_ecgfounder
from pacx.errors import PacxError, exit_on_error
from pacx.models.ecg import Net1D, Net1DConfig
from pacx.optim import lr_factor, make_adamw, param_groups, set_lr

PARAMETERS = ("heart_rate", "qrs_width", "r_amp", "t_amp", "t_width", "p_amp", "p_width", "pr", "axis")
CLINICAL = {  # name: (parameter, ">" or "<", threshold)
    "sinus_tachycardia": ("heart_rate", ">", 100.0),
    "sinus_bradycardia": ("heart_rate", "<", 60.0),
    "lvh_voltage": ("r_amp", ">", 1.7),
    "low_voltage": ("r_amp", "<", 1.0),
    "wide_qrs": ("qrs_width", ">", 0.10),
    "peaked_t": ("t_amp", ">", 0.45),
    "p_pulmonale": ("p_amp", ">", 0.16),
    "broad_p": ("p_width", ">", 0.026),
    "long_pr": ("pr", ">", 0.18),
    "left_axis_deviation": ("axis", "<", -10.0),
}
GRADES = (0.2, 0.4, 0.6, 0.8)


def fit_thresholds(params: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Graded thresholds: the GRADES quantiles of each parameter over the given (training) records, leaving out a
    quantile that no record (or every record) exceeds: a parameter with a point mass (T width is constant below
    4.5 mmol/L potassium) would otherwise give constant labels."""
    out = {}
    for k in PARAMETERS:
        if k in params:
            qs = [float(q) for q in np.quantile(params[k], GRADES)]
            out[k] = [q for q in qs if 0.0 < float(np.mean(params[k] > q)) < 1.0]
    return out


def findings(params: dict[str, np.ndarray], thresholds: dict[str, list[float]]) -> tuple[list[str], np.ndarray]:
    """(names, (N, F) float32 0/1): the clinical findings, then the graded ones."""
    names, cols = [], []
    for name, (k, op, thr) in CLINICAL.items():
        if k in params:
            names.append(name)
            cols.append(params[k] > thr if op == ">" else params[k] < thr)
    for k, qs in thresholds.items():
        for j, q in enumerate(qs):
            names.append(f"{k}>{q:.4g}" if len(qs) < len(GRADES) else f"{k}>q{int(GRADES[j] * 100)}")
            cols.append(params[k] > q)
    return names, np.stack(cols, axis=1).astype(np.float32)


def _preprocess_chunk(x: np.ndarray) -> np.ndarray:
    return np.stack([ecgfounder_preprocess(r.astype(np.float64)) for r in x])


def load_split_ecg(world: Path, split: str, workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(hadm_id (N,), preprocessed ECG (N, 12, 5000) float32) of a data_npy split, through the Stage-2 target path's
    own functions (`symile_ecg_to_ecgfounder`, `ecgfounder_preprocess` at its default 50 Hz notch)."""
    d = world / "data_npy" / split
    raw = np.load(d / f"ecg_{split}.npy", mmap_mode="r")
    hadm = np.load(d / f"hadm_id_{split}.npy")
    chunks = [symile_ecg_to_ecgfounder(np.asarray(raw[lo:lo + 64])) for lo in range(0, len(raw), 64)]
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(workers) as pool:
            out = list(pool.map(_preprocess_chunk, chunks))
    else:
        out = [_preprocess_chunk(c) for c in chunks]
    return hadm, np.concatenate(out)


def split_params(world: Path, *hadm: np.ndarray) -> list[dict[str, np.ndarray]]:
    """The world's ECG parameters (world.json `ecg_<name>`) for each given array of hadm_ids, in that order."""
    s = json.loads((world / "world.json").read_text())["samples"]
    missing = [k for k in PARAMETERS if f"ecg_{k}" not in s]
    if missing:
        raise PacxError(f"{world}/world.json: no ECG parameters {missing} (a world written before they were saved)")
    index = {h: i for i, h in enumerate(s["hadm_id"])}
    params = {k: np.asarray(s[f"ecg_{k}"], np.float64) for k in PARAMETERS}
    return [{k: v[[index[int(h)] for h in ids]] for k, v in params.items()} for ids in hadm]


def macro_auroc_per_column(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score
    return {j: float(roc_auc_score(y[:, j], p[:, j])) for j in range(y.shape[1]) if 0 < y[:, j].mean() < 1}


@torch.no_grad()
def predict(net: Net1D, x: np.ndarray, batch: int = 64) -> np.ndarray:
    net.eval()
    return np.concatenate([torch.sigmoid(net(torch.from_numpy(x[lo:lo + batch]))).numpy()
                           for lo in range(0, len(x), batch)])


@dataclass
class Config:
    world: str = opt("", "world folder (pacx.world.make): data_npy/{train,val}/ecg_*.npy and world.json")
    out: str = opt("runs/ecg_teacher/teacher.pth", "checkpoint to write (ECGFounder layout)")
    base_filters: int = opt(8, "stem width")
    filter_list: tuple[int, ...] = opt((16, 16, 32, 32, 64, 64, 128), "stage widths (the last = embedding width)")
    m_blocks_list: tuple[int, ...] = opt((1, 1, 1, 1, 1, 1, 1), "blocks per stage")
    groups_width: int = opt(8, "channels per group of the k=16 conv")
    epochs: int = opt(8, "training epochs")
    batch_size: int = opt(32, "batch size")
    lr: float = opt(3e-3, "AdamW peak learning rate")
    weight_decay: float = opt(1e-2, "AdamW weight decay")
    crop: int = opt(2048, "training crop in samples (0: the full 10 s)")
    workers: int = opt(2, "processes for the ECG preprocessing")
    threads: int = opt(0, "torch threads (0: torch's default)")
    seed: int = opt(0, "seed")
    overwrite: bool = opt(False, "replace an existing --out (and its .json)")


def train_teacher(cfg: Config, log=print) -> dict:
    t0 = time.perf_counter()
    world = Path(cfg.world)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    hadm_tr, x_tr = load_split_ecg(world, "train", cfg.workers)
    hadm_va, x_va = load_split_ecg(world, "val", cfg.workers)
    t_pre = time.perf_counter() - t0
    p_tr, p_va = split_params(world, hadm_tr, hadm_va)
    thresholds = fit_thresholds(p_tr)  # training split only
    names, y_tr = findings(p_tr, thresholds)
    _, y_va = findings(p_va, thresholds)
    log(f"ecg_teacher: {len(x_tr)} train / {len(x_va)} val ECGs preprocessed in {t_pre:.0f} s; {len(names)} findings")

    if cfg.epochs <= 1:
        log(f"warning: the warmup (1 epoch) is as long as the training ({cfg.epochs} epoch): the learning rate never "
            f"reaches --lr {cfg.lr:g}; pass --epochs 2 or more")
    torch.manual_seed(cfg.seed)
    net_cfg = Net1DConfig(base_filters=cfg.base_filters, filter_list=tuple(cfg.filter_list),
                          m_blocks_list=tuple(cfg.m_blocks_list), groups_width=cfg.groups_width,
                          n_classes=len(names))
    net = Net1D(net_cfg)
    optimizer = make_adamw(param_groups(net, cfg.weight_decay, decay_all=True), cfg.lr)
    rng = np.random.default_rng([cfg.seed, 11])
    steps_per_epoch = len(x_tr) // cfg.batch_size
    step, history = 0, []
    length = x_tr.shape[-1]
    crop = cfg.crop if 0 < cfg.crop < length else length
    y_tr_t = torch.from_numpy(y_tr)
    for epoch in range(cfg.epochs):
        net.train()
        order = rng.permutation(len(x_tr))
        losses = []
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            starts = rng.integers(0, length - crop + 1, len(idx))
            xb = torch.from_numpy(np.stack([x_tr[i, :, s:s + crop] for i, s in zip(idx, starts)]))
            set_lr(optimizer, cfg.lr * lr_factor(step / steps_per_epoch, 1.0, cfg.epochs, per_step=True))
            loss = F.binary_cross_entropy_with_logits(net(xb), y_tr_t[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
        p_va_hat = predict(net, x_va)
        auc = macro_auroc_per_column(y_va, p_va_hat)
        history.append({"epoch": epoch, "train_bce": float(np.mean(losses)), "val_bce": float(
            F.binary_cross_entropy(torch.from_numpy(p_va_hat).clamp(1e-6, 1 - 1e-6), torch.from_numpy(y_va))),
            "val_macro_auroc": float(np.mean(list(auc.values()))), "seconds": round(time.perf_counter() - t0, 1)})
        log("ecg_teacher: " + " | ".join(f"{k} {v:.4g}" for k, v in history[-1].items()))
    t_train = time.perf_counter() - t0 - t_pre

    p_va_hat = predict(net, x_va)
    auc = macro_auroc_per_column(y_va, p_va_hat)
    acc = ((p_va_hat > 0.5) == (y_va > 0.5)).mean(axis=0)
    per = {names[j]: {"val_auroc": auc.get(j, float("nan")), "val_accuracy": float(acc[j]),
                      "val_prevalence": float(y_va[:, j].mean())} for j in range(len(names))}
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_atomic({"state_dict": net.state_dict(), "findings": names, "thresholds": thresholds,
                "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(net_cfg).items()}}, out)
    report = {"checkpoint": str(out), "config": {k: (list(v) if isinstance(v, tuple) else v)
                                                 for k, v in asdict(cfg).items()},
              "parameters": sum(p.numel() for p in net.parameters()), "embedding_dim": net_cfg.filter_list[-1],
              "n_train": len(x_tr), "n_val": len(x_va), "findings": per,
              "val_macro_auroc": float(np.nanmean([v["val_auroc"] for v in per.values()])),
              "val_mean_accuracy": float(acc.mean()), "history": history,
              "seconds_preprocess": round(t_pre, 1), "seconds_train": round(t_train, 1),
              "seconds_total": round(time.perf_counter() - t0, 1)}
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    log(f"ecg_teacher: val macro AUROC {report['val_macro_auroc']:.4f}, mean accuracy "
        f"{report['val_mean_accuracy']:.4f}; {report['parameters']:,} parameters; written {out} "
        f"({report['seconds_total']:.0f} s)")
    return report


@exit_on_error
def main(argv=None):
    cfg = parse_config(Config, argv, __doc__)
    if not cfg.world:
        raise PacxError("--world is required")
    if Path(cfg.out).exists() and not cfg.overwrite:
        raise PacxError(f"{cfg.out} exists; pass --overwrite to replace it")
    if len(cfg.filter_list) != len(cfg.m_blocks_list):
        raise PacxError("--filter_list and --m_blocks_list need one entry per stage")
    train_teacher(cfg)


if __name__ == "__main__":
    main()
