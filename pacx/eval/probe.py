"""Classification on top of a backbone: the loss, the Linear head, the data path (seeded, resumable batches) and the
linear probe on cached features, with model selection on the best validation AUROC. Full and LoRA fine-tuning, which
share these pieces, are in `pacx.eval.finetune`.

Implements METHOD.md "Stage 3" (Classification) after the reference PaCX-MAE (Lyce24/PACX-MAE `Modules/cl_lit.py`,
`Models/models.py::CXRModel`, `Stage3_CL.py`): one Linear(D, C) on the CLS feature; BCE-with-logits for binary and
multilabel, cross-entropy for multiclass; AdamW betas (0.9, 0.999) with no weight decay on biases, 1-D tensors and
norms; cosine schedule stepped per epoch (reference warmup 0); the checkpoint with the best validation AUROC is the
one tested (Lightning `ModelCheckpoint(monitor="val/auroc", mode="max")`, the first of equal scores).
- linear probe: frozen backbone in eval mode, lr 3e-3, wd 0.01, 30 epochs, batch 512. The features are computed once
  and kept in memory. The reference trains the probe on horizontally flipped images half of the time (its only random
  augmentation, `T.RandomHorizontalFlip` in `sl_train`); `flip=True` reproduces that exactly by caching the features of
  each training image and of its mirror image and drawing one of the two per sample and epoch. The probe takes
  seconds, so it keeps no checkpoint: a resumed evaluation trains it again, to the same result.

Notation: B = batch, N = samples, D = feature width, C = outputs (binary 1, multilabel C, multiclass K).
"""
import contextlib
import copy
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch.utils.data import DataLoader

from pacx.loader import SeededView, check_batch, collate
from pacx.eval.metrics import macro_auroc
from pacx.optim import lr_factor, make_adamw, param_groups, set_lr
from pacx.runlog import Progress
from pacx.data.transforms import eval_resize


@dataclass
class ProbeConfig:
    epochs: int = 30  # linear probe 30, fine-tune 40 (`Stage3_CL.py`)
    lr: float = 3e-3  # head lr: probe 3e-3, fine-tune 3e-4
    backbone_lr_scale: float = 0.1  # fine-tune: backbone lr = scale x head lr (`cl_lit.py`: lr * 0.1)
    weight_decay: float = 0.01
    warmup_epochs: float = 0.0
    batch_size: int = 512
    flip: bool = True  # probe: train on mirrored images half of the time, as the reference
    seed: int = 0
    log_every: int = 10  # progress lines every N steps (fine-tune) / epochs (probe)
    ckpt_every: int = 0  # fine-tune: also checkpoint every N steps (0: at the end of each epoch only)


def num_outputs(labels: np.ndarray, task: str, num_classes: int | None = None) -> int:
    if task == "multiclass":
        return int(num_classes if num_classes is not None else np.asarray(labels).max() + 1)
    return int(np.asarray(labels).reshape(len(labels), -1).shape[1])


def classification_loss(logits: torch.Tensor, target: torch.Tensor, task: str) -> torch.Tensor:
    """BCE-with-logits on (B, C) 0/1 targets, or cross-entropy on (B,) class ids."""
    if task == "multiclass":
        return F.cross_entropy(logits.float(), target.long().reshape(-1))
    return F.binary_cross_entropy_with_logits(logits.float(), target.float().reshape(logits.shape))


def to_probabilities(logits: torch.Tensor, task: str) -> np.ndarray:
    """Softmax rows for multiclass, sigmoids otherwise; float64 numpy (N, C)."""
    logits = logits.float()
    p = logits.softmax(dim=-1) if task == "multiclass" else logits.sigmoid()
    return p.detach().cpu().double().numpy()


def image_label_sample(item: dict, g: torch.Generator, size: int, train: bool = False,
                       flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """An ImageCSV item -> (normalised image (3, S, S), label). `flip` mirrors the image; `train` mirrors it with
    p = 0.5 (the reference's `sl_train`: Resize + RandomHorizontalFlip)."""
    image = item["image"]
    if flip or (train and torch.rand((), generator=g).item() < 0.5):
        image = TF.horizontal_flip(image)
    label = item.get("label", torch.zeros(()))
    return eval_resize(image, size), label


def row_loader(dataset, fn: Callable, rows: Iterable[int], batch_size: int, workers: int = 0, shuffle: bool = False,
               seed: int = 0, epoch: int = 0, pin_memory: bool = False, start: int = 0) -> DataLoader:
    """Batches of `fn(dataset[row], generator)` over the given rows, in order or shuffled by (seed, epoch), from
    batch `start` on (a resumed epoch skips the batches it already trained on and sees the same ones after them).
    Each sample's generator is seeded from (seed, epoch) too, so augmentation does not depend on the worker count;
    an unreadable sample comes back as a one-line `DataError` via `pacx.loader.check_batch`."""
    rng = np.random.default_rng([seed, epoch])
    rows = np.asarray(list(rows))
    order = rng.permutation(rows) if shuffle else rows
    seeds = rng.integers(0, 2**63 - 1, size=len(order))
    items = [(int(r), int(s)) for r, s in zip(order, seeds)]  # what SeededView expects: (index, sample seed)
    return DataLoader(SeededView(dataset, fn), batch_size=batch_size, sampler=items[start * batch_size:],
                      num_workers=workers, collate_fn=collate, pin_memory=pin_memory,
                      # Its own generator: starting an epoch then draws nothing from the global torch RNG, whose
                      # state (LoRA dropout) a resumed fine-tuning run restores from its checkpoint.
                      generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def extract_features(backbone: nn.Module, loader: Iterable, device: torch.device,
                     autocast: Callable = contextlib.nullcontext, log: Callable | None = None,
                     label: str = "features") -> torch.Tensor:
    """CLS features (N, D) float32 on the CPU of every batch `(x, ...)` from `loader`, backbone in eval mode."""
    backbone.eval()
    feats = []
    total = len(loader) if hasattr(loader, "__len__") else 0
    progress = Progress(total)
    for step, batch in enumerate(loader, 1):
        x = check_batch(batch)[0].to(device, non_blocking=True)
        with autocast():
            feats.append(backbone(x).float().cpu())  # (B, D)
        progress.update(len(x))
        if log is not None and (step % 20 == 0 or step == total):
            log(f"{label}: {progress.line(step)}")
    return torch.cat(feats)  # (N, D)


def standardize(feats: dict[str, torch.Tensor], reference: torch.Tensor, eps: float = 1e-6) -> dict:
    """Every feature (each split's (N, D)) centred and scaled by the mean and std of `reference` (the training
    split): the MAE paper's probe BatchNorm without affine, evaluate.py --probe_norm."""
    mu, sd = reference.mean(0), reference.std(0) + eps
    return {s: (f - mu) / sd for s, f in feats.items()}


def set_epoch_lr(optimizer, epoch: int, cfg: ProbeConfig) -> None:
    """The head's lr (cfg.lr; a fine-tuned backbone's groups scale it) at `epoch` of a per-epoch schedule, as the
    reference (LambdaLR stepped per epoch)."""
    set_lr(optimizer, cfg.lr * lr_factor(epoch, cfg.warmup_epochs, cfg.epochs))


def is_better(score: float, best: float) -> bool:
    """Strictly better; a NaN score (no column with both classes in val) never wins over a number."""
    return not np.isnan(score) and (np.isnan(best) or score > best)


def train_linear_probe(train_feats: torch.Tensor, y_train: np.ndarray, val_feats: torch.Tensor, y_val: np.ndarray,
                       task: str, cfg: ProbeConfig, num_classes: int | None = None,
                       train_feats_flipped: torch.Tensor | None = None, device: torch.device | None = None,
                       log: Callable | None = None) -> tuple[nn.Linear, dict]:
    """Train Linear(D, C) on cached features; returns the head of the best validation-AUROC epoch and a summary.

    With `cfg.flip` and `train_feats_flipped` (the features of the mirrored training images, same rows), each sample
    of each epoch uses one of the two at random (p = 0.5).
    """
    device = device or torch.device("cpu")
    torch.manual_seed(cfg.seed)  # same head init and batch order for every backbone
    head = nn.Linear(train_feats.shape[1], num_outputs(y_train, task, num_classes)).to(device)
    optimizer = make_adamw(param_groups(head, cfg.weight_decay), cfg.lr)
    x_train, x_val = train_feats.to(device), val_feats.to(device)
    x_flip = train_feats_flipped.to(device) if cfg.flip and train_feats_flipped is not None else None
    y = torch.as_tensor(np.asarray(y_train), device=device)
    g = torch.Generator().manual_seed(cfg.seed)
    n = len(x_train)
    best = {"epoch": -1, "val_auroc": float("nan"), "state": copy.deepcopy(head.state_dict())}
    history = []
    progress = Progress(cfg.epochs)
    for epoch in range(cfg.epochs):
        set_epoch_lr(optimizer, epoch, cfg)
        head.train()
        order = torch.randperm(n, generator=g)
        use_flip = torch.rand(n, generator=g) < 0.5
        losses = []
        for start in range(0, n, cfg.batch_size):
            idx = order[start:start + cfg.batch_size].to(device)
            x = x_train[idx]  # (B, D)
            if x_flip is not None:
                x = torch.where(use_flip.to(device)[idx, None], x_flip[idx], x)  # (B, D)
            loss = classification_loss(head(x), y[idx], task)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        progress.update(n)
        with torch.no_grad():
            head.eval()
            val_auroc = macro_auroc(y_val, to_probabilities(head(x_val), task), task)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_auroc": val_auroc})
        if is_better(val_auroc, best["val_auroc"]) or best["epoch"] < 0:
            best = {"epoch": epoch, "val_auroc": val_auroc, "state": copy.deepcopy(head.state_dict())}
        if log is not None and ((epoch + 1) % cfg.log_every == 0 or epoch + 1 == cfg.epochs):
            log(progress.line(epoch + 1, loss=float(np.mean(losses)), val_auroc=val_auroc))
    head.load_state_dict(best["state"])
    head.eval()
    return head, {"best_epoch": best["epoch"], "best_val_auroc": best["val_auroc"], "history": history}


LOGREG_C = (0.01, 0.1, 1.0, 10.0)  # inverse L2 strengths tried; the one with the best validation AUROC is tested


def logistic_probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                   x_test: np.ndarray, task: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """A converged linear probe: scikit-learn's LogisticRegression (lbfgs, to convergence) on standardised features
    (training statistics), one per label for binary / multilabel, multinomial for multiclass, its L2 strength chosen
    on validation AUROC from `LOGREG_C`. The reference's AdamW probe takes a few dozen steps at 1% of the labels;
    this one shows what the same features hold when the probe is trained to its optimum. A label with one class in
    the training subset predicts that class's frequency. Returns (p_val, p_test, {'C', 'best_val_auroc'})."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    x_train, x_val, x_test = (scaler.transform(x) for x in (x_train, x_val, x_test))
    y_train = np.asarray(y_train)

    def fit_predict(C: float):
        def model(y):
            return LogisticRegression(C=C, max_iter=5000, random_state=seed).fit(x_train, y)

        if task == "multiclass":
            m = model(y_train)
            cols = np.zeros((len(x_val) + len(x_test), num_outputs(y_train, task, None)))  # classes seen
            cols[:, m.classes_] = m.predict_proba(np.concatenate([x_val, x_test]))
            return cols[:len(x_val)], cols[len(x_val):]
        y2 = y_train.reshape(len(y_train), -1)
        out = np.zeros((len(x_val) + len(x_test), y2.shape[1]))
        for c in range(y2.shape[1]):
            if len(np.unique(y2[:, c])) < 2:
                out[:, c] = y2[:, c].mean()
            else:
                out[:, c] = model(y2[:, c]).predict_proba(np.concatenate([x_val, x_test]))[:, 1]
        return out[:len(x_val)], out[len(x_val):]

    best = None
    for C in LOGREG_C:
        p_val, p_test = fit_predict(C)
        auroc = macro_auroc(y_val, p_val, task)
        if best is None or is_better(auroc, best[2]):
            best = (p_val, p_test, auroc, C)
    return best[0], best[1], {"C": best[3], "best_val_auroc": best[2]}
