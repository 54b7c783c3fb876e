"""Stage 2: cross-modal distillation. The Stage-1 CXR encoder, adapted with LoRA, learns to predict and align with
frozen ECG (ECGFounder, 1024-d) and lab (Stage-1b DAE, 256-d) embeddings; the merged encoder is exported as a plain
ViT for image-only use.

METHOD.md "Stage 2": LoRA r 8 / alpha 16 / dropout 0.1 on qkv, fc1, fc2 (+ the final LayerNorm trains); five heads;
L = 0.5 * InfoNCE (global-batch negatives, learnable temperature) + 1.0 * cosine regression; AdamW 1e-4 wd 0.05 on
every trainable parameter; 5 warmup epochs then cosine with floor 0.01, stepped per epoch; 50 epochs; global batch
128; gradient clip 1.0; seed 42. Targets are computed once by `pacx.data.targets` and cached.

    python train_distill.py --data data_npy --init runs/mae/last.pt --labs_dae runs/labs/last.pt \
        --ecg_weights 12_lead_ECGFounder.pth
    python train_distill.py --data triplets.csv --labs_table my_labs.csv --lab_columns crea=50912,hb=51222 \
        --init runs/mae/last.pt --labs_dae runs/labs/last.pt --ecg_weights 12_lead_ECGFounder.pth
    torchrun --nproc_per_node=4 train_distill.py --data data_npy --init mae_pretrain_vit_base.pth ...

Raw triplets: one CSV row per admission (image path, WFDB record, lab row id, split); the lab table is read by the
rule of `pacx.data.lab_table` (the one train_labs.py uses), and its percentiles come from the lab_percentiles.json
train_labs.py saved beside --labs_dae when it is there.

Writes out_dir/last.pt (resumable state), out_dir/encoder.pt (the merged plain ViT of the epoch with the best
validation loss, as the original exports; of the last step without --val_split), encoder_last.pt (the last epoch's),
retrieval.json (the latest validation retrieval with intervals), metrics.jsonl, config.json.
"""
import json
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from pacx import checkpoint as ckpt
from pacx.config import opt, parse_config
from pacx.data.symile import SymileMIMIC
from pacx.data.tables import cell_error, file_column, read_table
from pacx.data.images import read_rgb_tensor
from pacx.data.lab_table import LAB_COLUMNS_HELP, LAB_MAP_HELP, lab_mapping
from pacx.data.targets import LabInputs, read_lab_inputs, symile_targets, triplet_targets
from pacx.data.transforms import denormalize, distill_train, eval_resize
from pacx.dist import all_reduce_mean, init_runtime, shutdown, wrap_for_training
from pacx.errors import DataError, PacxError, exit_on_error
from pacx.eval.metrics import wilson_interval
from pacx.loader import GlobalBatchSampler, SeededView, cap_workers, check_batch, make_loader
from pacx.models.heads import HeadsConfig, retrieval_metrics
from pacx.models.pacx_model import PaCX, PaCXConfig, export_checkpoint
from pacx.optim import make_adamw, param_groups
from pacx.runlog import LossMeter
from pacx.training import Run, TrainConfig, prepare_run_dir
from pacx.weights import load_vit


@dataclass
class Config(TrainConfig):
    data: str = opt("", "Symile-MIMIC data_npy/ folder (train/ and val/ splits), or a raw-triplet CSV (image path, "
                        "WFDB record, lab row id, split); the synthetic world writes both")
    train_split: str = opt("train", "split (folder, or value of --split_column) used for training")
    val_split: str = opt("val", "split used for the retrieval diagnostics ('' to skip)")
    split_column: str = opt("split", "triplets: column naming each row's split")
    image_column: str = opt("cxr_path", "triplets: image-path column")
    ecg_column: str = opt("ecg_path", "triplets: WFDB record column (path without extension)")
    lab_id_column: str = opt("hadm_id", "triplets: column naming the row of --labs_table (same name there)")
    labs_table: str = opt("", "triplets: raw labs CSV, one row per --lab_id_column value, any of the 50 labs as "
                              "columns (percentiles: --labs_dae's lab_percentiles.json, else fitted on the train "
                              "rows)")
    lab_columns: tuple[str, ...] = opt((), LAB_COLUMNS_HELP)
    lab_map: str = opt("", LAB_MAP_HELP)
    init: str = opt("", "Stage-1 weights: a pacx train_mae.py last.pt, an official MAE .pth or a PaCX Lightning "
                        "Stage-1 .ckpt ('' = random init, for tests only)")
    model: str = opt("base", "ViT preset when --init carries no config: base | small | tiny")
    img_size: int = opt(0, "input size (0: the encoder's)")
    encoder_norm_eps: float = opt(1e-5, "LayerNorm eps of the Stage-2 encoder: 1e-5 is the reference quirk, 1e-6 "
                                        "matches Stage 1")
    ecg_weights: str = opt("", "12_lead_ECGFounder.pth ('' = random ECG encoder: targets are meaningless)")
    labs_dae: str = opt("", "Stage-1b lab DAE checkpoint (train_labs.py)")
    targets_cache: str = opt("runs/targets", "folder of the cached frozen-encoder targets")
    notch_hz: float = opt(50.0, "ECG notch frequency: 50 Hz is the reference quirk (MIMIC mains is 60 Hz)")
    zero_missing_labs: bool = opt(False, "zero missing lab entries before the DAE encodes them (the reference "
                                         "does not: a quirk)")
    strategy: str = opt("lora", "lora | last_n (unfreeze the last --last_n blocks)")
    lora_r: int = opt(8, "LoRA rank")
    lora_alpha: float = opt(16.0, "LoRA alpha (scaling alpha / r)")
    lora_dropout: float = opt(0.1, "LoRA input dropout")
    last_n: int = opt(4, "blocks unfrozen by --strategy last_n")
    use_ecg: bool = opt(True, "distil from the ECG targets")
    use_labs: bool = opt(True, "distil from the lab targets")
    shuffle_pairs: bool = opt(False, "negative control: train on images paired with other patients' targets (one "
                                     "fixed permutation), everything else equal; validation keeps the true pairs")
    contrastive_weight: float = opt(0.5, "weight of the InfoNCE term")
    regression_weight: float = opt(1.0, "weight of the cosine-regression term")
    head_dropout: float = opt(0.2, "dropout at the input of every head")
    target_dropout: bool = opt(True, "head dropout also on the frozen targets before their heads (reference quirk)")
    epochs: int = opt(50, "training epochs")
    batch_size: int = opt(128, "global batch over all processes (InfoNCE negatives come from all of it)")
    lr: float = opt(1e-4, "AdamW learning rate")
    weight_decay: float = opt(0.05, "AdamW weight decay")
    decay_all: bool = opt(True, "decay every trainable parameter, LayerNorm and temperature too (reference quirk)")
    warmup_epochs: float = opt(5.0, "linear warmup epochs")
    lr_floor: float = opt(0.01, "cosine schedule floor (fraction of --lr)")
    grad_clip: float = opt(1.0, "gradient-norm clip")
    seed: int = opt(42, "seed for the adapters, heads, data order, augmentation and dropout")
    out_dir: str = opt("runs/distill", "folder for last.pt, encoder.pt, metrics.jsonl and config.json")


def shuffled(targets: dict, seed: int) -> dict:
    """The negative control (--shuffle_pairs): every image paired with another patient's ECG and lab targets (the
    two stay together, as one other patient), by a seeded derangement: a random cyclic order in which each patient
    takes the next one's targets, so no image keeps its own. Only training pairs are shuffled: validation keeps the
    true pairs, so its retrieval shows what the control learned about them."""
    n = len(targets["labs"])
    order = np.random.default_rng([seed, 13]).permutation(n)
    perm = np.arange(n)
    perm[order] = np.roll(order, -1)
    return {k: v[torch.from_numpy(perm)] for k, v in targets.items()}


def symile_split(cfg: Config, split: str, rt, train: bool, size: int):
    """(the split's samples, 0): Symile ECGs hold all 12 leads."""
    data = SymileMIMIC(cfg.data, split)
    targets = symile_targets(Path(cfg.data) / split, split, cfg.ecg_weights or None, cfg.labs_dae or None,
                             Path(cfg.targets_cache), rt.device, cfg.notch_hz, cfg.zero_missing_labs, rt.print0,
                             with_ecg=cfg.use_ecg)
    targets = shuffled(targets, cfg.seed) if train and cfg.shuffle_pairs else targets

    def sample(i, g):
        img = denormalize(torch.as_tensor(data[i]["cxr"]))  # stored ImageNet-normalised; augment in [0, 1]
        img = distill_train(img, g, size) if train else eval_resize((img * 255).round().to(torch.uint8), size)
        return img, targets["ecg"][i], targets["labs"][i]

    return SeededView(range(len(data)), sample), targets["ecg"].shape[1], 0


def triplet_split(cfg: Config, split: str, rt, train: bool, size: int, labs: LabInputs):
    """(the split's samples, how many of its ECG records had their limb leads derived from I and II)."""
    df = read_table(cfg.data, [cfg.image_column, cfg.ecg_column, cfg.lab_id_column, cfg.split_column])
    root = Path(cfg.data).parent
    rows = np.flatnonzero(df[cfg.split_column] == split)
    if not len(rows):
        raise DataError(f"{cfg.data}: no row has {cfg.split_column} == {split!r}")
    # Whole columns, then this split's rows: an error names the line of the file, not of the split.
    images = [file_column(df, cfg.image_column, root, cfg.data, check_files=True)[r] for r in rows]
    ecg_paths = [file_column(df, cfg.ecg_column, root, cfg.data, check_files=False)[r] for r in rows]
    ids = df[cfg.lab_id_column].str.strip()
    if (ids == "").any():
        raise cell_error(cfg.data, int(np.flatnonzero((ids == "").to_numpy())[0]), cfg.lab_id_column,
                         "an admission id (a row of --labs_table)", "")
    train_ids = ids[df[cfg.split_column] == cfg.train_split].tolist()
    targets = triplet_targets(Path(cfg.data), rows, split, ecg_paths, ids.iloc[rows].tolist(), train_ids, labs,
                              cfg.ecg_weights or None, cfg.labs_dae or None, Path(cfg.targets_cache), rt.device,
                              cfg.notch_hz, cfg.zero_missing_labs, rt.print0, cfg.use_ecg, cfg.ecg_column)
    targets = shuffled(targets, cfg.seed) if train and cfg.shuffle_pairs else targets

    def sample(i, g):
        img = read_rgb_tensor(images[i])  # uint8 (3, H, W)
        img = distill_train(img, g, size) if train else eval_resize(img, size)
        return img, targets["ecg"][i], targets["labs"][i]

    return SeededView(range(len(images)), sample), targets["ecg"].shape[1], int(targets.get("ecg_derived", 0))


@torch.no_grad()
def validate(model: PaCX, loader, rt) -> dict:
    """In-batch retrieval CXR -> ECG / labs in the shared space (the reference's validation diagnostics)."""
    model.eval()
    meter = LossMeter()
    hits = {}  # modality -> per-query (top-1, top-5) hit counts and the number of queries, summed over batches
    for batch in loader:
        cxr, ecg, labs = [t.to(rt.device, non_blocking=True) for t in check_batch(batch)]
        with rt.autocast():
            loss, parts, out = model(cxr, ecg, labs)
        stats = {"val_loss": loss, **{f"val_{k}": v for k, v in parts.items() if k != "total"}}
        if "cxr_shared" in out:
            for m in model.heads.modalities:
                r = retrieval_metrics(out["cxr_shared"].float(), out[f"{m}_shared"].float())
                stats.update({f"val_{m}_{k}": v for k, v in r.items()})
                n = torch.tensor(float(len(cxr)), device=rt.device)
                hits[m] = hits.get(m, 0) + torch.stack([r["top1"] * n, r["top5"] * n, n])
        meter.add(stats)
    model.train()
    val = meter.means(all_reduce_mean)
    val["retrieval"] = {m: (all_reduce_mean(h) * rt.world_size).tolist() for m, h in hits.items()}
    return val


def retrieval_report(retrieval: dict, batch: int, epoch: int) -> dict:
    """Validation retrieval of the latest epoch, each rate with its 95% Wilson interval over the queries and the
    chance rate of in-batch retrieval among `batch` candidates."""
    out = {"epoch": epoch, "candidates": batch}
    for m, (top1, top5, n) in retrieval.items():
        out[m] = {"queries": int(n),
                  "top1": {"value": top1 / n, "interval": wilson_interval(top1, n), "chance": 1 / batch},
                  "top5": {"value": top5 / n, "interval": wilson_interval(top5, n), "chance": min(5, batch) / batch}}
    return out


def data_loaders(cfg: Config, rt, size: int):
    """Training and validation loaders of Symile-MIMIC arrays or raw triplets, with their frozen-encoder targets
    (computed once, on rank 0; the other ranks then read its cache), and the ECG targets' width."""
    triplets = not Path(cfg.data).is_dir()
    mapping = lab_mapping(cfg.lab_columns, cfg.lab_map)
    if triplets and not cfg.labs_table:
        raise PacxError("--labs_table is required with a triplet CSV (the raw lab values of each --lab_id_column)")
    if not triplets and (cfg.labs_table or mapping):
        raise PacxError(f"{cfg.data}: a Symile-MIMIC folder holds its lab percentiles; --labs_table, --lab_columns "
                        f"and --lab_map go with a triplet CSV")
    # Read (and checked) by every rank, before any waits for rank 0's targets: a bad table stops them all at once.
    labs = read_lab_inputs(cfg.labs_table, cfg.lab_id_column, mapping, cfg.labs_dae or None, rt.print0) \
        if triplets else None
    if rt.distributed and not rt.is_main:
        dist.barrier()
    split_data = partial(triplet_split, labs=labs) if triplets else symile_split
    with torch.random.fork_rng(devices=[]):  # building the frozen encoders (a cache miss) must not move the seed
        train_set, ecg_dim, derived = split_data(cfg, cfg.train_split, rt, True, size)
        val_set, _, val_derived = split_data(cfg, cfg.val_split, rt, False, size) if cfg.val_split else (None, 0, 0)
    if rt.distributed and rt.is_main:
        dist.barrier()
    if derived + val_derived:  # once per run, not per record
        rt.print0(f"ECG: {derived + val_derived} record(s) lack some of III, aVR, aVL, aVF; derived from I and II "
                  f"(III = II - I, aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2)")
    workers = cap_workers(cfg.workers, rt.print0)
    sampler = GlobalBatchSampler(len(train_set), cfg.batch_size, rt.rank, rt.world_size, cfg.seed)
    loader = make_loader(train_set, sampler, workers, rt.device)
    val_loader = None
    if val_set is not None:
        val_batch = min(cfg.batch_size, len(val_set) // rt.world_size * rt.world_size)
        val_sampler = GlobalBatchSampler(len(val_set), val_batch, rt.rank, rt.world_size, cfg.seed, shuffle=False)
        val_loader = make_loader(val_set, val_sampler, workers, rt.device)
    return sampler, loader, val_loader, ecg_dim


@exit_on_error
def main(argv=None):
    cfg = parse_config(Config, argv, __doc__)
    if not cfg.data:
        raise PacxError("--data is required (a Symile-MIMIC data_npy/ folder or a triplet CSV; see --help)")
    rt = init_runtime(cfg.device, cfg.seed, cfg.amp)
    resume_from = prepare_run_dir(cfg, rt)
    out = Path(cfg.out_dir)

    encoder = load_vit(cfg.init, cfg.model, cfg.img_size, norm_eps=cfg.encoder_norm_eps)
    sampler, loader, val_loader, ecg_dim = data_loaders(cfg, rt, encoder.cfg.img_size)
    # The ECG heads take the teacher's width (1024 for ECGFounder, narrower for the built-in world's teacher).
    heads_cfg = HeadsConfig(cxr_dim=encoder.cfg.embed_dim, ecg_dim=ecg_dim, use_ecg=cfg.use_ecg,
                            use_labs=cfg.use_labs, contrastive_weight=cfg.contrastive_weight,
                            regression_weight=cfg.regression_weight, target_dropout=cfg.target_dropout,
                            dropout=cfg.head_dropout)
    model = PaCX(PaCXConfig(encoder.cfg, heads_cfg, cfg.strategy, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout,
                            cfg.last_n), encoder)

    model.to(rt.device)
    optimizer = make_adamw(param_groups(model, cfg.weight_decay, cfg.decay_all), cfg.lr)

    def export():  # with every checkpoint: the merged encoder of the last step (of the best epoch: see below)
        ckpt.save_atomic(export_checkpoint(model), out / ("encoder_last.pt" if val_loader is not None else
                                                          "encoder.pt"))

    run = Run(cfg, rt, model, optimizer, sampler, model.config_dict(), resume_from, on_save=export, show=("total",))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    rt.print0(f"stage 2: {trainable:,} trainable parameters ({model.trainable_encoder_params:,} in the encoder), "
              f"{sampler.n} samples, {run.steps_per_epoch} steps/epoch, {run.total_steps} steps, "
              f"{rt.world_size} process(es) on {rt.device}")
    train_model = wrap_for_training(model, rt, cfg.compile)
    model.train()
    for epoch in run.epochs():
        for batch in run.batches(loader):
            cxr, ecg, labs = (t.to(rt.device, non_blocking=True) for t in batch)
            with rt.autocast():
                loss, parts, _ = train_model(cxr, ecg, labs)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.step_done(loss, parts, len(cxr))
        if val_loader is not None and run.epoch_ended():
            val = validate(model, val_loader, rt)
            retrieval = val.pop("retrieval", {})
            if rt.is_main and retrieval:  # in-batch: each query against the loader batch of one process
                (out / "retrieval.json").write_text(json.dumps(retrieval_report(retrieval, val_loader.batch_size,
                                                                                epoch), indent=2))
            rt.print0("validation | " + " | ".join(f"{k} {v:.4g}" for k, v in val.items()))
            run.log.write(step=run.step, epoch=epoch, **val)
            # The original exports the checkpoint of the best validation total loss (Lightning ModelCheckpoint).
            if val["val_loss"] < run.counters.get("best_val_loss", math.inf):
                run.counters.update(best_val_loss=val["val_loss"], best_epoch=epoch)
                if rt.is_main:
                    ckpt.save_atomic(export_checkpoint(model), out / "encoder.pt")
                rt.print0(f"encoder.pt: the merged encoder of epoch {epoch}, the best validation loss so far")
        run.save()
    rt.print0(f"done: {out / ckpt.LAST}, merged encoder {out / 'encoder.pt'}" +
              (f" (epoch {run.counters['best_epoch']}; the last epoch's: encoder_last.pt)" if val_loader else ""))
    shutdown(rt)


if __name__ == "__main__":
    main()
