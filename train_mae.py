"""Stage 1: masked-autoencoder pretraining, of the chest X-ray ViT (`--modality cxr`) or of the lab-value
denoising autoencoder (`--modality labs`).

DESIGN.md "Stage 1a" (MAE: 90% masking, AdamW 1.5e-4 betas (0.9, 0.95) wd 0.05 without decay on 1-D params, 10
warmup epochs then cosine stepped per epoch, global batch 512, RandomResizedCrop(224, scale 0.5-1) + flip) and
"Stage 1b" (lab DAE: AdamW 3e-4 wd 1e-2, 200 warmup steps then cosine per step, batch 256, 50 epochs).

    python train_mae.py --data images/ --model tiny --epochs 5 --batch_size 32          # CPU, a folder of images
    torchrun --nproc_per_node=2 train_mae.py --data CheXpert-v1.0/train.csv --image_column Path
    python train_mae.py --modality labs --data data_npy                                  # Symile-MIMIC percentiles

Options left at `None` take the modality's reference value (shown in `--help`).
"""
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pacx import checkpoint as ckpt
from pacx.config import opt, parse_config
from pacx.dist import all_reduce_mean, init_runtime, micro_batches, shutdown, sync_gradients, wrap_for_training
from pacx.errors import PacxError, exit_on_error
from pacx.models.labs_dae import LabDAE, LabDAEConfig
from pacx.loader import GlobalBatchSampler, SeededView, check_batch, make_loader
from pacx.models.mae import MAE_PRESETS, MaskedAutoencoder
from pacx.optim import finish_step, lr_factor, make_adamw, param_groups, set_lr
from pacx.runlog import LossMeter, Progress, open_run
from pacx.data.stage1 import image_dataset, lab_arrays
from pacx.data.transforms import mae_train
from pacx.weights import load_mae_weights


@dataclass
class Config:
    modality: str = opt("cxr", "cxr: the image MAE (Stage 1a) | labs: the lab DAE (Stage 1b)")
    data: str = opt("", "cxr: a folder of images or a CSV with an image-path column; labs: a Symile-MIMIC "
                        "data_npy/ folder, its train/ split folder, or a raw labs CSV (one column per lab)")
    image_column: str = opt("Path", "image-path column of a CSV (CheXpert: Path)")
    image_root: str = opt("", "folder that relative CSV paths start from (default: the CSV's folder)")
    split_column: str = opt("", "CSV column naming each row's split ('' = use every row)")
    split: str = opt("train", "rows used when --split_column is given")
    model: str = opt("base", "MAE preset: base (ViT-B/16, the reference) | small | tiny (CPU demos, tests)")
    img_size: int = opt(0, "input size (0: the preset's, 224 for base)")
    mask_ratio: float = opt(0.9, "fraction of patches removed")
    norm_pix_loss: bool = opt(False, "normalise each target patch (MAE paper); the PaCX reference does not")
    init: str = opt("", "start from weights: an official MAE .pth, a pacx Stage-1 checkpoint or a PaCX Lightning "
                        "Stage-1 .ckpt")
    epochs: int | None = opt(None, "cxr 400, labs 50")
    warmup_epochs: float = opt(10.0, "cxr: linear warmup epochs")
    warmup_steps: int | None = opt(None, "warmup in steps instead of epochs (labs: 200)")
    batch_size: int | None = opt(None, "global batch over all processes: cxr 512, labs 256")
    lr: float | None = opt(None, "absolute learning rate: cxr 1.5e-4, labs 3e-4")
    weight_decay: float | None = opt(None, "cxr 0.05 (none on 1-D params and biases), labs 1e-2 (all params)")
    per_step_lr: bool | None = opt(None, "step the schedule every step (cxr default: per epoch, a reference "
                                         "quirk; labs: per step)")
    grad_clip: float = opt(0.0, "clip the gradient norm (0: off, as the reference)")
    accum_steps: int = opt(1, "split each process's batch into this many micro-batches whose gradients add up "
                              "before one optimizer step (same result, less memory; DDP syncs only on the last)")
    skip_nonfinite: bool = opt(False, "skip a step with a NaN/Inf loss or gradient (counted in the log) instead of "
                                      "stopping; costs one host sync per step")
    workers: int = opt(4, "data-loading processes per GPU/process")
    device: str = opt("auto", "auto | cpu | cuda")
    amp: bool = opt(True, "bf16 autocast on CUDA (ignored on CPU)")
    compile: bool = opt(False, "torch.compile the model")
    seed: int = opt(0, "seed for the model init, data order, augmentation and masks")
    out_dir: str = opt("runs/mae", "folder for last.pt, metrics.jsonl and config.json")
    resume: bool = opt(False, "continue the run in out_dir from its last.pt")
    overwrite: bool = opt(False, "replace a run already in out_dir")
    ckpt_every: int = opt(0, "also checkpoint every N steps (0: at the end of each epoch only)")
    log_every: int = opt(10, "steps between progress lines / log records")
    max_steps: int = opt(0, "stop after this many steps in all (0: run every epoch)")


MODALITY_DEFAULTS = {
    "cxr": dict(epochs=400, batch_size=512, lr=1.5e-4, weight_decay=0.05, per_step_lr=False),
    "labs": dict(epochs=50, batch_size=256, lr=3e-4, weight_decay=1e-2, per_step_lr=True, warmup_steps=200),
}


def resolve(cfg: Config) -> Config:
    if cfg.modality not in MODALITY_DEFAULTS:
        raise PacxError(f"--modality: expected cxr or labs, got {cfg.modality!r}")
    for key, value in MODALITY_DEFAULTS[cfg.modality].items():
        if getattr(cfg, key) is None:
            setattr(cfg, key, value)
    if not cfg.data:
        raise PacxError("--data is required (a folder of images, an image CSV, or labs data; see --help)")
    if cfg.accum_steps < 1:
        raise PacxError(f"--accum_steps: expected >= 1, got {cfg.accum_steps}")
    return cfg


def build_model(cfg: Config):
    if cfg.modality == "labs":
        return LabDAE(LabDAEConfig()), {"kind": "lab_dae", **asdict(LabDAEConfig())}
    if cfg.model not in MAE_PRESETS:
        raise PacxError(f"--model: expected one of {sorted(MAE_PRESETS)}, got {cfg.model!r}")
    mae_cfg = MAE_PRESETS[cfg.model](norm_pix_loss=cfg.norm_pix_loss)
    if cfg.img_size:
        mae_cfg.encoder.img_size = cfg.img_size
    return MaskedAutoencoder(mae_cfg), {"kind": "mae", **asdict(mae_cfg)}


def build_data(cfg: Config, num_patches: int):
    """The per-sample function of each modality draws all its randomness from the sample's generator `g`."""
    if cfg.modality == "labs":
        x, m = lab_arrays(cfg.data, Path(cfg.out_dir))

        def sample(i, g):
            return x[i], m[i], torch.rand(x.shape[1], generator=g)  # noise picks the 15% observed entries to drop

        return SeededView(range(len(x)), sample)

    images = image_dataset(cfg.data, cfg.image_column, cfg.image_root, cfg.split_column, cfg.split)
    size = cfg.img_size

    def sample(item, g):
        return mae_train(item["image"], g, size), torch.rand(num_patches, generator=g)  # noise: its mask

    return SeededView(images, sample)


@exit_on_error
def main(argv=None):
    cfg = resolve(parse_config(Config, argv, __doc__))
    rt = init_runtime(cfg.device, cfg.seed, cfg.amp)
    resume_from = ckpt.prepare_out_dir(cfg.out_dir, cfg.resume, cfg.overwrite)
    out = Path(cfg.out_dir)

    model, model_config = build_model(cfg)
    if cfg.modality == "cxr":
        cfg.img_size = model.cfg.img_size
        if cfg.init:
            load_mae_weights(model, cfg.init)
    dataset = build_data(cfg, model.cfg.num_patches if cfg.modality == "cxr" else 0)
    sampler = GlobalBatchSampler(len(dataset), cfg.batch_size, rt.rank, rt.world_size, cfg.seed)
    loader = make_loader(dataset, sampler, cfg.workers, rt.device)
    steps_per_epoch = sampler.steps_per_epoch
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)

    model.to(rt.device)
    groups = param_groups(model, cfg.weight_decay, decay_all=cfg.modality == "labs")
    betas = (0.9, 0.95) if cfg.modality == "cxr" else (0.9, 0.999)
    optimizer = make_adamw(groups, cfg.lr, betas)

    counters = {"skipped": 0}  # steps skipped under --skip_nonfinite
    step, log = open_run(out, rt, resume_from, model, optimizer, {"script": asdict(cfg), "model": model_config},
                         counters)
    rt.print0(f"{cfg.modality} stage 1: {sum(p.numel() for p in model.parameters()):,} parameters, "
              f"{len(dataset)} samples, {steps_per_epoch} steps/epoch, {total_steps} steps, "
              f"{rt.world_size} process(es) on {rt.device}")

    train_model = wrap_for_training(model, rt, cfg.compile)

    def save():
        meter.check_finite(step, out / ckpt.LAST, model.parameters())
        if rt.is_main:
            ckpt.save_training_state(out / ckpt.LAST, model, optimizer, step, steps_per_epoch,
                                     config=model_config, script_config=asdict(cfg), counters=counters)

    warmup = cfg.warmup_steps / steps_per_epoch if cfg.warmup_steps else cfg.warmup_epochs
    progress = Progress(total_steps, start_step=step)
    meter = LossMeter()
    model.train()
    while step < total_steps:
        epoch = step // steps_per_epoch
        sampler.set_epoch(epoch, start_step=step % steps_per_epoch)
        if not cfg.per_step_lr:
            set_lr(optimizer, cfg.lr * lr_factor(epoch, warmup, cfg.epochs))
        for batch in loader:
            batch = check_batch(batch)
            if cfg.per_step_lr:
                set_lr(optimizer, cfg.lr * lr_factor(step / steps_per_epoch, warmup, cfg.epochs, per_step=True))
            batch = [t.to(rt.device, non_blocking=True) for t in batch]
            optimizer.zero_grad(set_to_none=True)
            parts = micro_batches(batch, cfg.accum_steps)
            if cfg.modality == "labs":
                # The DAE's loss is a mean over observed entries, whose count varies by sample: every part divides
                # by the global batch's count per rank, so micro-batches add up and DDP's mean over ranks is exact.
                per_rank = all_reduce_mean(batch[1].sum())
            loss = 0.0
            for i, (micro, weight) in enumerate(parts):
                with sync_gradients(train_model, sync=i == len(parts) - 1):
                    with rt.autocast():
                        if cfg.modality == "cxr":  # the same number of removed patches per image: sample weights
                            part_loss = train_model(micro[0], cfg.mask_ratio, noise=micro[1])[0] * weight
                        else:
                            part_loss = train_model(micro[0], micro[1], noise=micro[2], denom=per_rank)[0]
                    part_loss.backward()
                loss = loss + part_loss.detach()
            step += 1
            if finish_step(model.parameters(), optimizer, loss, cfg.grad_clip, cfg.skip_nonfinite):
                meter.add({"loss": loss})
            else:
                counters["skipped"] += 1
                rt.print0(f"step {step}: non-finite loss or gradient, step skipped ({counters['skipped']} so far)")
            progress.update(len(batch[0]) * rt.world_size)
            if step % cfg.log_every == 0 or step == total_steps:
                meter.check_finite(step, out / ckpt.LAST)
                means, lr = meter.means(all_reduce_mean), optimizer.param_groups[0]["lr"]
                rt.print0(progress.line(step, epoch=epoch, **means, lr=lr))
                log.write(step=step, epoch=epoch, **means, lr=lr, img_per_s=progress.images_per_second(),
                          **(counters if cfg.skip_nonfinite else {}))
            if cfg.ckpt_every and step % cfg.ckpt_every == 0:
                save()
            if step >= total_steps:
                break
        save()
    rt.print0(f"done: {out / ckpt.LAST}")
    shutdown(rt)


if __name__ == "__main__":
    main()
