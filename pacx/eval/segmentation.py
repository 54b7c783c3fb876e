"""Segmentation probe: a small convolutional decoder on the frozen backbone's patch tokens, trained with BCE + soft
Dice, scored by Dice and IoU.

Implements METHOD.md "Stage 3" (Segmentation) after the reference PaCX-MAE (Lyce24/PACX-MAE `Models/models.py::
CXRModel` with task "seg", `Modules/seg_lit.py`, `Stage3_Seg.py`, `Data/data_modules.py::RandomFlipRotate`):
    patch tokens after the final LayerNorm (B, G*G, D) -> (B, D, G, G)
    -> Conv3x3 D->256, ReLU -> ConvT(2, s2) 256->128, ReLU -> 128->64, ReLU -> 64->32, ReLU -> 32->1
    = logits at 16 G x 16 G (224 x 224 for ViT-B/16).
Module names match the reference (`decoder.0`, `decoder.2`, ... of an nn.Sequential). For a backbone whose patch is
not 16 px (the tiny test ViT uses 8 px), the 16 G logits are resized bilinearly to the mask size.
Loss: BCE-with-logits + soft Dice (probabilities, counts pooled over the batch, eps 1e-6), weights 1 / 1.
Training: backbone frozen (eval mode, no gradients), AdamW lr 1e-4, wd 1e-4, betas (0.9, 0.999), 5 warmup epochs
then cosine, stepped per epoch, 50 epochs; train augmentation: horizontal flip (p 0.5) and a rotation in
[-10, 10] degrees applied to image and mask together (nearest, fill 0); the decoder with the best validation Dice
is tested (the reference monitors `val/dice`).

Notation: B = batch, N = patches (G*G), D = width, G = patches per side, S = image side.
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

from pacx.loader import check_batch
from pacx.eval.metrics import dice_iou
from pacx.optim import lr_factor, make_adamw, param_groups, set_lr
from pacx.runlog import Progress
from pacx.data.transforms import normalize


@dataclass
class SegConfig:
    epochs: int = 50
    warmup_epochs: float = 5.0
    lr: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 256  # the original's (`CXRSegDataModule`)
    bce_weight: float = 1.0
    dice_weight: float = 1.0
    patience: int = 0  # stop after this many epochs without a better validation Dice (0: run every epoch)
    log_every: int = 10


class SegDecoder(nn.Module):
    def __init__(self, embed_dim: int, grid_size: int, hidden: int = 256):
        super().__init__()
        self.grid_size = grid_size
        self.decoder = nn.Sequential(
            nn.Conv2d(embed_dim, hidden, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(hidden, 128, kernel_size=2, stride=2), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(128, 64, kernel_size=2, stride=2), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(64, 32, kernel_size=2, stride=2), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(32, 1, kernel_size=2, stride=2),
        )

    def forward(self, tokens: torch.Tensor, out_size: int | None = None) -> torch.Tensor:
        """Patch tokens (B, G*G, D) -> logits (B, 1, 16 G, 16 G), or (B, 1, out_size, out_size) when given."""
        B, N, D = tokens.shape
        G = self.grid_size
        x = tokens.transpose(1, 2).reshape(B, D, G, G)  # (B, D, G, G), patch index h*G + w
        logits = self.decoder(x)  # (B, 1, 16G, 16G)
        if out_size is not None and logits.shape[-1] != out_size:
            logits = F.interpolate(logits, size=(out_size, out_size), mode="bilinear", align_corners=False)
        return logits


@torch.no_grad()
def patch_tokens(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The frozen backbone's patch tokens after the final LayerNorm (prefix tokens dropped): (B, G*G, D)."""
    return backbone.forward_features(x)[:, backbone.num_prefix_tokens:]


def soft_dice_loss(logits: torch.Tensor, masks: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """1 - soft Dice of sigmoid(logits), counts summed over batch and pixels (reference `soft_dice_loss`)."""
    probs = logits.sigmoid()
    inter = (probs * masks).sum(dim=(0, 2, 3))  # (1,)
    total = probs.sum(dim=(0, 2, 3)) + masks.sum(dim=(0, 2, 3))
    return 1.0 - ((2.0 * inter + eps) / (total + eps)).mean()


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor, cfg: SegConfig = SegConfig()) -> torch.Tensor:
    logits = logits.float()
    return (cfg.bce_weight * F.binary_cross_entropy_with_logits(logits, masks)
            + cfg.dice_weight * soft_dice_loss(logits, masks))


def seg_sample(image: torch.Tensor, mask: torch.Tensor, size: int, g: torch.Generator | None = None,
               train: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 image (3, H, W) and 0/1 mask (1, H, W) -> normalised image (3, S, S) and 0/1 mask (1, S, S).

    Square resize of both, bilinear, the mask thresholded at 0.5 after the augmentation (the original's
    `CXRSegDataset`: `T.Resize` on image and mask, then `ToTensor() > 0.5`); with `train`, the reference's
    RandomFlipRotate on both (nearest, as torchvision's `rotate` default), every draw from the sample's generator `g`.
    """
    image = TF.resize(image, [size, size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    mask = TF.resize(mask, [size, size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    if train:
        if torch.rand((), generator=g).item() < 0.5:
            image, mask = TF.horizontal_flip(image), TF.horizontal_flip(mask)
        angle = -10.0 + 20.0 * torch.rand((), generator=g).item()
        image = TF.rotate(image, angle, interpolation=TF.InterpolationMode.NEAREST, fill=0)
        mask = TF.rotate(mask, angle, interpolation=TF.InterpolationMode.NEAREST, fill=0)
    return normalize(image), (mask > 0.5).float()


def seg_item(item: dict, g: torch.Generator, size: int, train: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """A `pacx.data.datasets.SegmentationCSV` item -> `seg_sample` of its image and mask."""
    return seg_sample(item["image"], item["mask"], size, g, train)


@torch.no_grad()
def evaluate_segmentation(backbone: nn.Module, decoder: SegDecoder, loader: Iterable, device: torch.device,
                          autocast: Callable = contextlib.nullcontext) -> tuple[np.ndarray, np.ndarray, dict]:
    """Per-image Dice and IoU (N,) over batches (image, mask), and the original's score: Dice and IoU of the counts
    pooled over each batch, averaged over batches weighted by their size (`seg_lit.py` logs its per-batch score with
    `on_epoch=True, batch_size=B`), which depends on the batch size (the original's is 256)."""
    backbone.eval()
    decoder.eval()
    dice, iou, pooled = [], [], []
    for batch in loader:
        x, m = (t.to(device, non_blocking=True) for t in check_batch(batch)[:2])
        with autocast():
            logits = decoder(patch_tokens(backbone, x), m.shape[-1])
        d, i = dice_iou(logits.float(), m)
        dice.append(d.cpu())
        iou.append(i.cpu())
        pooled.append((len(x), *dice_iou(logits.float().flatten(0, 1)[None], m.flatten(0, 1)[None])))
    n = sum(b for b, _, _ in pooled)
    batch_pooled = {"dice": sum(b * float(d) for b, d, _ in pooled) / n,
                    "iou": sum(b * float(i) for b, _, i in pooled) / n}
    return torch.cat(dice).double().numpy(), torch.cat(iou).double().numpy(), batch_pooled


def train_segmentation(backbone: nn.Module, train_loader: Callable[[int], Iterable], val_loader: Iterable,
                       cfg: SegConfig, device: torch.device, autocast: Callable = contextlib.nullcontext,
                       seed: int = 0, log: Callable | None = None) -> tuple[SegDecoder, dict]:
    """Train a SegDecoder on the frozen `backbone`; `train_loader(epoch)` yields (image, mask) batches. Returns the
    decoder of the best validation-Dice epoch and a summary. With `cfg.patience`, training stops once that many
    epochs in a row (after the warmup) have not improved the validation Dice."""
    if log is not None and cfg.warmup_epochs >= cfg.epochs:
        log(f"warning: the decoder's warmup ({cfg.warmup_epochs:g} epochs) is as long as its training ({cfg.epochs} "
            f"epochs): it is scored before its learning rate peaks")
    backbone.to(device).eval().requires_grad_(False)
    torch.manual_seed(seed)  # same decoder init for every backbone
    decoder = SegDecoder(backbone.cfg.embed_dim, backbone.cfg.grid_size).to(device)
    optimizer = make_adamw(param_groups(decoder, cfg.weight_decay, decay_all=True), cfg.lr)
    best = {"epoch": -1, "val_dice": -1.0, "state": None}
    history = []
    progress = Progress(cfg.epochs * len(train_loader(0)))
    step = 0
    for epoch in range(cfg.epochs):
        set_lr(optimizer, cfg.lr * lr_factor(epoch, cfg.warmup_epochs, cfg.epochs))  # per epoch, as the reference
        decoder.train()
        losses = []
        for batch in train_loader(epoch):
            x, m = (t.to(device, non_blocking=True) for t in check_batch(batch)[:2])
            with autocast():
                logits = decoder(patch_tokens(backbone, x), m.shape[-1])
            loss = segmentation_loss(logits, m, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
            progress.update(len(x))
            if log is not None and step % cfg.log_every == 0:
                log(progress.line(step, epoch=epoch, loss=float(np.mean(losses))))
        val_dice = float(evaluate_segmentation(backbone, decoder, val_loader, device, autocast)[0].mean())
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_dice": val_dice})
        if log is not None:
            log(progress.line(step, epoch=epoch, val_dice=val_dice))
        if val_dice > best["val_dice"]:
            best = {"epoch": epoch, "val_dice": val_dice, "state": copy.deepcopy(decoder.state_dict())}
        if cfg.patience and epoch + 1 >= cfg.warmup_epochs and epoch - best["epoch"] >= cfg.patience:
            if log is not None:
                log(f"validation Dice has not improved for {cfg.patience} epochs: stopped after epoch {epoch}")
            break
    decoder.load_state_dict(best["state"])
    decoder.eval()
    return decoder, {"best_epoch": best["epoch"], "best_val_dice": best["val_dice"], "history": history}
