"""Stage 1a: masked-autoencoder pretraining of the chest X-ray ViT.

METHOD.md "Stage 1a": AdamW 1.5e-4 betas (0.9, 0.95) wd 0.05 without decay on 1-D params and biases, 10 warmup
epochs then cosine stepped per epoch, global batch 512, 400 epochs, RandomResizedCrop(224, scale 0.5-1) + horizontal
flip. 75% of the patches removed, as the original code trains (the paper states 90%, `--mask_ratio 0.9`; METHOD.md
"Found by running the original").

    python train_mae.py --data images/ --model tiny --epochs 50 --warmup_epochs 5 --batch_size 32    # CPU, a folder
    torchrun --nproc_per_node=2 train_mae.py --data CheXpert-v1.0/train.csv --image_column Path
    python train_mae.py --data ... --init mae_pretrain_vit_base_full.pth      # start from the official MAE weights

Writes out_dir/last.pt (resumable, with the MAE config that rebuilds the model), metrics.jsonl and config.json.
"""
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch

from pacx import checkpoint as ckpt
from pacx.config import opt, parse_config
from pacx.data.stage1 import image_dataset
from pacx.data.transforms import mae_train
from pacx.dist import init_runtime, shutdown, wrap_for_training
from pacx.errors import PacxError, exit_on_error
from pacx.loader import GlobalBatchSampler, SeededView, cap_workers, make_loader
from pacx.models.mae import MaskedAutoencoder
from pacx.optim import make_adamw, param_groups
from pacx.training import Run, TrainConfig, accumulate, prepare_run_dir
from pacx.weights import load_mae_weights, mae_config, read_checkpoint


@dataclass
class Config(TrainConfig):
    data: str = opt("", "a folder of images, a CSV with an image-path column, or a preprocessing cache "
                        "(python -m pacx.data.make_cache)")
    image_column: str = opt("Path", "image-path column of a CSV (CheXpert: Path)")
    image_root: str = opt("", "folder that relative CSV paths start from (default: the CSV's folder)")
    split_column: str = opt("", "CSV column naming each row's split ('' = use every row)")
    split: str = opt("train", "rows used when --split_column is given")
    model: str = opt("base", "MAE preset: base (ViT-B/16, the reference) | small | tiny (CPU demos, tests)")
    img_size: int = opt(0, "input size (0: the preset's, 224 for base)")
    mask_ratio: float = opt(0.75, "fraction of patches removed: 0.75 trained the original's released checkpoints (its "
                                  "configured 0.9 never reaches the model, a quirk); 0.9 is the paper's")
    norm_pix_loss: bool = opt(False, "normalise each target patch (MAE paper); the PaCX reference does not")
    init: str = opt("", "start from weights: an official MAE .pth, a pacx Stage-1 checkpoint or a PaCX Lightning "
                        "Stage-1 .ckpt")
    accum_steps: int = opt(1, "split each process's batch into this many micro-batches whose gradients add up "
                              "before one optimizer step (same result, less memory; DDP syncs only on the last)")
    epochs: int = opt(400, "training epochs")
    batch_size: int = opt(512, "global batch over all processes")
    lr: float = opt(1.5e-4, "AdamW learning rate (absolute)")
    weight_decay: float = opt(0.05, "AdamW weight decay (none on 1-D parameters and biases)")
    warmup_epochs: float = opt(10.0, "linear warmup epochs")
    out_dir: str = opt("runs/mae", "folder for last.pt, metrics.jsonl and config.json")


def mae_sample(item: dict, g: torch.Generator, size: int, num_patches: int):
    """One training sample: the augmented image and its mask noise, every random draw from the sample's `g`."""
    return mae_train(item["image"], g, size), torch.rand(num_patches, generator=g)


@exit_on_error
def main(argv=None):
    cfg = parse_config(Config, argv, __doc__)
    if not cfg.data:
        raise PacxError("--data is required (a folder of images, an image CSV or a cache; see --help)")
    if cfg.accum_steps < 1:
        raise PacxError(f"--accum_steps: expected >= 1, got {cfg.accum_steps}")
    if not 0 < cfg.mask_ratio < 1:
        raise PacxError(f"--mask_ratio: expected a fraction in (0, 1), got {cfg.mask_ratio}")
    rt = init_runtime(cfg.device, cfg.seed, cfg.amp)
    resume_from = prepare_run_dir(cfg, rt)

    model = MaskedAutoencoder(mae_config(cfg.model, cfg.img_size, cfg.norm_pix_loss))
    kept = int(model.cfg.num_patches * (1 - cfg.mask_ratio))  # pacx.models.mae.random_masking's count
    if not 0 < kept < model.cfg.num_patches:
        raise PacxError(f"--mask_ratio {cfg.mask_ratio}: keeps {kept} of {model.cfg.num_patches} patches; expected "
                        f"at least one kept and one removed")
    if cfg.init:
        load_mae_weights(model, read_checkpoint(cfg.init))
    images = image_dataset(cfg.data, cfg.image_column, cfg.image_root, cfg.split_column, cfg.split)
    dataset = SeededView(images, partial(mae_sample, size=model.cfg.img_size, num_patches=model.cfg.num_patches))
    sampler = GlobalBatchSampler(len(dataset), cfg.batch_size, rt.rank, rt.world_size, cfg.seed)
    loader = make_loader(dataset, sampler, cap_workers(cfg.workers, rt.print0), rt.device)

    model.to(rt.device)
    optimizer = make_adamw(param_groups(model, cfg.weight_decay, cfg.decay_all), cfg.lr, betas=(0.9, 0.95))
    run = Run(cfg, rt, model, optimizer, sampler, {"kind": "mae", **asdict(model.mae_cfg)}, resume_from)
    rt.print0(f"MAE: {sum(p.numel() for p in model.parameters()):,} parameters, {len(dataset)} images, "
              f"{run.steps_per_epoch} steps/epoch, {run.total_steps} steps, {rt.world_size} process(es) on "
              f"{rt.device}")
    train_model = wrap_for_training(model, rt, cfg.compile)
    model.train()
    for _ in run.epochs():
        for batch in run.batches(loader):
            images, noise = (t.to(rt.device, non_blocking=True) for t in batch)
            optimizer.zero_grad(set_to_none=True)
            # Every image removes the same number of patches, so the batch loss is the sample-weighted mean.
            loss = accumulate(train_model, rt, [images, noise], cfg.accum_steps,
                              lambda m, weight: train_model(m[0], cfg.mask_ratio, noise=m[1])[0] * weight)
            run.step_done(loss, {"loss": loss}, len(images))
        run.save()
    rt.print0(f"done: {Path(cfg.out_dir) / ckpt.LAST}")
    shutdown(rt)


if __name__ == "__main__":
    main()
