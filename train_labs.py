"""Stage 1b: the mask-aware denoising autoencoder of the 50 lab values, whose 256-d latent is Stage 2's lab target.

METHOD.md "Stage 1b": input = 50 percentiles + 50 observed flags; 15% of the observed labs hidden per forward; MSE
over the originally observed labs; AdamW 3e-4, wd 1e-2 on every parameter, 200 warmup steps then cosine stepped per
step, batch 256, 50 epochs.

    python train_labs.py --data data_npy                # Symile-MIMIC labs_percentiles / labs_missingness (train/)
    python train_labs.py --data labs_train.csv          # a raw table: one column per lab (itemid or name)
    python train_labs.py --data my_labs.csv --lab_id_column patient --lab_columns crea=50912,hb=51222
    torchrun --nproc_per_node=2 train_labs.py --data data_npy

A raw table may hold any subset of the 50 labs under any column names (`pacx.data.lab_table` gives the rule: the
mapping, the unit checks, the lines naming labs without a column and columns not used). Its empirical-CDF percentile
transform is fitted on that training table and saved as out_dir/lab_percentiles.json, which train_distill.py reads
beside the checkpoint. Writes out_dir/last.pt (with the config that rebuilds the DAE), metrics.jsonl, config.json.
"""
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pacx import checkpoint as ckpt
from pacx.config import opt, parse_config
from pacx.data.lab_table import LAB_COLUMNS_HELP, LAB_MAP_HELP, lab_mapping
from pacx.data.labs import LAB_TRANSFORM
from pacx.data.stage1 import lab_arrays
from pacx.dist import all_reduce_mean, init_runtime, shutdown, wrap_for_training
from pacx.errors import PacxError, exit_on_error
from pacx.loader import GlobalBatchSampler, SeededView, cap_workers, make_loader
from pacx.models.labs_dae import LabDAE, LabDAEConfig
from pacx.optim import make_adamw, param_groups
from pacx.training import Run, TrainConfig, accumulate, prepare_run_dir


@dataclass
class Config(TrainConfig):
    data: str = opt("", "a Symile-MIMIC data_npy/ folder, its train/ split folder, or a raw labs CSV (any of the 50 "
                        "labs as columns, by itemid, name or --lab_columns / --lab_map)")
    lab_id_column: str = opt("", "lab table: the column naming each row (an admission or patient id; its values must "
                                 "be unique), '' for none")
    lab_columns: tuple[str, ...] = opt((), LAB_COLUMNS_HELP)
    lab_map: str = opt("", LAB_MAP_HELP)
    accum_steps: int = opt(1, "split each process's batch into this many micro-batches whose gradients add up "
                              "before one optimizer step (same result, less memory; DDP syncs only on the last)")
    epochs: int = opt(50, "training epochs")
    batch_size: int = opt(256, "global batch over all processes")
    lr: float = opt(3e-4, "AdamW learning rate")
    weight_decay: float = opt(1e-2, "AdamW weight decay")
    decay_all: bool = opt(True, "decay every parameter, as the reference (`LabsDAELightning`)")
    warmup_steps: int = opt(200, "linear warmup steps")
    per_step_lr: bool = opt(True, "step the schedule every step, as the reference")
    out_dir: str = opt("runs/labs", "folder for last.pt, metrics.jsonl, config.json (and lab_percentiles.json)")


class DropNoise:
    """A training sample: percentiles, observed flags, and the uniform draw that picks the 15% of observed labs
    hidden (from the sample's own generator, like the MAE's mask noise)."""

    def __init__(self, x: torch.Tensor, m: torch.Tensor):
        self.x, self.m = x, m

    def __call__(self, i: int, g: torch.Generator):
        return self.x[i], self.m[i], torch.rand(self.x.shape[1], generator=g)


@exit_on_error
def main(argv=None):
    cfg = parse_config(Config, argv, __doc__)
    if not cfg.data:
        raise PacxError("--data is required (a Symile-MIMIC data_npy/ folder or a raw labs CSV; see --help)")
    if cfg.accum_steps < 1:
        raise PacxError(f"--accum_steps: expected >= 1, got {cfg.accum_steps}")
    rt = init_runtime(cfg.device, cfg.seed, cfg.amp)
    resume_from = prepare_run_dir(cfg, rt)

    model = LabDAE(LabDAEConfig())
    x, m, transform = lab_arrays(cfg.data, cfg.lab_id_column or None, lab_mapping(cfg.lab_columns, cfg.lab_map),
                                 rt.print0)
    dataset = SeededView(range(len(x)), DropNoise(x, m))
    sampler = GlobalBatchSampler(len(dataset), cfg.batch_size, rt.rank, rt.world_size, cfg.seed)
    loader = make_loader(dataset, sampler, cap_workers(cfg.workers, rt.print0), rt.device)

    model.to(rt.device)
    optimizer = make_adamw(param_groups(model, cfg.weight_decay, cfg.decay_all), cfg.lr)
    run = Run(cfg, rt, model, optimizer, sampler, {"kind": "lab_dae", **asdict(model.cfg)}, resume_from,
              unit="patients")
    if transform is not None and rt.is_main:  # Stage 2 reads the transform the DAE was trained with
        transform.save(Path(cfg.out_dir) / LAB_TRANSFORM)
    rt.print0(f"lab DAE: {sum(p.numel() for p in model.parameters()):,} parameters, {len(dataset)} patients, "
              f"{run.steps_per_epoch} steps/epoch, {run.total_steps} steps, {rt.world_size} process(es) on "
              f"{rt.device}")
    train_model = wrap_for_training(model, rt, cfg.compile)
    model.train()
    for _ in run.epochs():
        for batch in run.batches(loader):
            x_b, m_b, noise = (t.to(rt.device, non_blocking=True) for t in batch)
            optimizer.zero_grad(set_to_none=True)
            # The loss is a mean over observed entries, whose count varies by patient: every part divides by the
            # global batch's count per rank, so micro-batches add up and DDP's mean over ranks is exact.
            per_rank = all_reduce_mean(m_b.sum())
            loss = accumulate(train_model, rt, [x_b, m_b, noise], cfg.accum_steps,
                              lambda micro, _: train_model(micro[0], micro[1], noise=micro[2], denom=per_rank)[0])
            run.step_done(loss, {"loss": loss}, len(x_b))
        run.save()
    rt.print0(f"done: {Path(cfg.out_dir) / ckpt.LAST}")
    shutdown(rt)


if __name__ == "__main__":
    main()
