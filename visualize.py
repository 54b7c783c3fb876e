"""Figures of a PaCX-MAE run: MAE reconstructions, attention rollout of MAE vs PaCX, the low-label plot, training
curves and Stage 2's InfoNCE / retrieval against chance, each a PNG in --out_dir.

METHOD.md "Stage 1a" (what the 90%-masked MAE reconstructs; the MAE demo's four panels) and "Stage 3" (attention
rollout: mean over heads, + identity, row-normalise, multiply through the layers, CLS row over the patches,
upsample, min-max; MAE vs PaCX and their difference; low-data regime at 1% / 10% / 100% with 95% bootstrap CIs).
Rollout follows the reference `Stage3_VIS.ipynb` through `pacx.eval.rollout`, including its quirk of feeding [0, 1]
pixels without ImageNet normalisation (`--rollout_imagenet_norm true` for the clean input).

    python visualize.py --what recon --mae runs/mae/last.pt --images samples/ --num_images 4
    python visualize.py --what rollout --mae runs/mae/last.pt --pacx runs/distill/encoder.pt --images test.csv
    python visualize.py --what lowlabel --results runs/eval/results.json
    python visualize.py --what curves --logs runs/mae/metrics.jsonl,runs/distill/metrics.jsonl
    python visualize.py --what stage2 --stage2 runs/distill,runs/distill_shuffled
    python visualize.py --what all --mae ... --pacx ... --images ... --results ... --logs ... --stage2 ...

`--what all` draws every figure whose inputs are given. Checkpoints: a pacx Stage-1 `last.pt` (or an official
`mae_visualize_vit_base.pth` / `mae_pretrain_vit_base_full.pth`, which carry the decoder that reconstructions
need), a pacx Stage-2 `encoder.pt`, or any encoder layout `pacx.weights` reads.
"""
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from pacx.eval import plots
from pacx.config import opt, parse_config
from pacx.dist import pick_device
from pacx.errors import PacxError, exit_on_error
from pacx.models.mae import patchify
from pacx.eval.rollout import rollout_input, rollout_map
from pacx.runlog import read_jsonl
from pacx.data.stage1 import image_dataset
from pacx.data.transforms import eval_resize
from pacx.weights import load_mae, load_vit, vit_config

WHAT = ("recon", "rollout", "lowlabel", "curves", "stage2")


@dataclass
class Config:
    what: str = opt("all", "recon | rollout | lowlabel | curves | stage2 | all (every figure whose inputs are "
                                   "given)")
    out_dir: str = opt("figures", "folder for the PNGs")
    images: str = opt("", "recon / rollout: a folder of images or a CSV with an image-path column")
    image_column: str = opt("Path", "image-path column of an --images CSV")
    image_root: str = opt("", "folder relative CSV paths start from (default: the CSV's folder)")
    num_images: int = opt(4, "how many images (the first ones, in path / row order)")
    mae: str = opt("", "Stage-1 checkpoint: pacx last.pt or an official MAE file (recon needs its decoder)")
    pacx: str = opt("", "Stage-2 export encoder.pt (or any ViT checkpoint pacx.weights reads)")
    model: str = opt("base", "preset for checkpoints that carry no config (official MAE / timm): base | small | tiny")
    img_size: int = opt(0, "model input size (0: the checkpoint's, 224 for base)")
    mask_ratio: float = opt(0.9, "recon: fraction of patches removed (the PaCX reference trains with 0.9)")
    seed: int = opt(0, "recon: seed of the mask noise, so every run shows the same mask")
    rollout_imagenet_norm: bool = opt(False, "rollout: ImageNet-normalise the input (the reference feeds [0, 1] "
                                             "pixels: a quirk, kept by default)")
    results: tuple[str, ...] = opt((), "lowlabel: evaluate.py results.json file(s), comma-separated")
    metrics: tuple[str, ...] = opt(("auroc", "f1"), "lowlabel: metrics to plot (empty: every metric found)")
    logs: tuple[str, ...] = opt((), "curves: metrics.jsonl files or run folders holding one, comma-separated")
    stage2: tuple[str, ...] = opt((), "stage2: train_distill.py run folders (metrics.jsonl, config.json), "
                                      "comma-separated, e.g. the real run and its --shuffle_pairs control")
    dpi: int = opt(100, "figure resolution (figures are 12 inches wide: 1200 px at 100 dpi)")
    device: str = opt("auto", "auto | cpu | cuda")


def first_images(cfg: Config) -> list[tuple[str, torch.Tensor]]:
    """(file name, uint8 (3, H, W)) of the first --num_images images."""
    if not cfg.images:
        raise PacxError("--images is required for recon and rollout (a folder of images or an image CSV)")
    if cfg.num_images < 1:
        raise PacxError(f"--num_images: expected at least 1, got {cfg.num_images}")
    data = image_dataset(cfg.images, cfg.image_column, cfg.image_root)
    return [(Path(item["path"]).name, item["image"]) for item in (data[i] for i in range(min(cfg.num_images,
                                                                                               len(data))))]


@torch.no_grad()
def draw_recon(cfg: Config, device: torch.device, out: Path) -> Path:
    if not cfg.mae:
        raise PacxError("recon needs --mae (a Stage-1 checkpoint with its decoder)")
    model = load_mae(cfg.mae, cfg.model, cfg.img_size).to(device).eval()
    images = first_images(cfg)
    size, p = model.cfg.img_size, model.cfg.patch_size
    x = torch.stack([eval_resize(img, size) for _, img in images]).to(device)  # (B, 3, S, S), as in training
    noise = torch.rand(len(x), model.cfg.num_patches, generator=torch.Generator().manual_seed(cfg.seed))
    _, pred, mask = model(x, cfg.mask_ratio, noise=noise.to(device))
    panels = plots.compose_reconstruction(x, pred, mask, p, model.mae_cfg.norm_pix_loss)
    per_patch = ((patchify(panels["recon"], p) - patchify(x, p)) ** 2).mean(-1)  # (B, L)
    losses = (per_patch * mask).sum(1) / mask.sum(1)  # (B,): MSE over the removed patches, in normalised pixels
    rows = [{"name": name, "loss": float(losses[b]), "original": plots.to_display(x[b]),
             **{k: plots.to_display(v[b]) for k, v in panels.items()}} for b, (name, _) in enumerate(images)]
    return plots.plot_reconstructions(out / "recon.png", rows, cfg.mask_ratio, cfg.dpi)


@torch.no_grad()
def draw_rollout(cfg: Config, device: torch.device, out: Path) -> Path:
    named = [(name, path) for name, path in (("MAE", cfg.mae), ("PaCX", cfg.pacx)) if path]
    if not named:
        raise PacxError("rollout needs --mae and/or --pacx (two give their difference too)")
    models = [load_vit(path, cfg.model, cfg.img_size).to(device) for _, path in named]
    sizes = {m.cfg.img_size for m in models}
    if len(sizes) > 1:
        raise PacxError(f"--mae and --pacx take different input sizes {sorted(sizes)}; set --img_size for both")
    size = sizes.pop()
    images = first_images(cfg)
    x = torch.stack([rollout_input(img, size, cfg.rollout_imagenet_norm) for _, img in images]).to(device)
    maps = [rollout_map(m, x).float().cpu().numpy() for m in models]  # each (B, S, S) in [0, 1]
    gray = torch.stack([rollout_input(img, size) for _, img in images]).mean(1).numpy()  # (B, S, S) in [0, 1]
    rows = [{"name": name, "gray": gray[b], "maps": [m[b] for m in maps]} for b, (name, _) in enumerate(images)]
    return plots.plot_rollouts(out / "rollout.png", rows, [n for n, _ in named], cfg.rollout_imagenet_norm,
                               cfg.dpi)


def draw_lowlabel(cfg: Config, out: Path) -> Path:
    if not cfg.results:
        raise PacxError("lowlabel needs --results (evaluate.py's results.json)")
    records = [r for path in cfg.results for r in plots.read_results(path)]
    if cfg.metrics:
        found = sorted({r["metric"] for r in records})
        records = [r for r in records if r["metric"] in cfg.metrics]
        if not records:
            raise PacxError(f"--metrics {','.join(cfg.metrics)}: none in {','.join(cfg.results)} (found: "
                            f"{', '.join(found)})")
    return plots.plot_lowlabel(out / "lowlabel.png", records, cfg.dpi)


def read_log(entry: str) -> tuple[str, list[dict]]:
    """(run name, records) of a metrics.jsonl file or a run folder holding one."""
    path = Path(entry)
    path = path / "metrics.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise PacxError(f"{entry}: no metrics.jsonl there")
    try:
        records = read_jsonl(path)
    except ValueError as e:
        raise PacxError(f"{path}: not a JSON-lines log ({e})") from None
    return (path.parent.name if path.name == "metrics.jsonl" else path.stem), records


def draw_curves(cfg: Config, out: Path) -> Path:
    if not cfg.logs:
        raise PacxError("curves needs --logs (metrics.jsonl files or run folders)")
    logs = {}
    for entry in cfg.logs:
        name, records = read_log(entry)
        logs[name if name not in logs else entry] = records
    return plots.plot_curves(out / "curves.png", logs, cfg.dpi)


def draw_stage2(cfg: Config, out: Path) -> Path:
    """InfoNCE against ln(batch) and retrieval against chance; the batch comes from each run's config.json, the
    retrieval candidates from its retrieval.json (train_distill.py writes both)."""
    if not cfg.stage2:
        raise PacxError("stage2 needs --stage2 (train_distill.py run folders)")
    logs, batches = {}, set()
    for entry in cfg.stage2:
        name, records = read_log(entry)
        logs[name if name not in logs else entry] = records
        folder = Path(entry) if Path(entry).is_dir() else Path(entry).parent
        try:
            batch = json.loads((folder / "config.json").read_text())["script"]["batch_size"]
            retrieval = folder / "retrieval.json"
            candidates = json.loads(retrieval.read_text())["candidates"] if retrieval.is_file() else batch
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise PacxError(f"{folder}: not a train_distill.py run folder (config.json / retrieval.json: {e})") \
                from None
        batches.add((batch, candidates))
    if len(batches) > 1:
        raise PacxError(f"stage2: the runs used different batch sizes {sorted(batches)}; one chance level per figure")
    batch, candidates = batches.pop()
    return plots.plot_stage2(out / "stage2.png", logs, batch, candidates, cfg.dpi)


@exit_on_error
def main(argv=None) -> list[Path]:
    cfg = parse_config(Config, argv, __doc__)
    if cfg.what not in WHAT + ("all",):
        raise PacxError(f"--what: expected one of {', '.join(WHAT)} or all, got {cfg.what!r}")
    vit_config(cfg.model)  # an unknown --model is refused before any figure is drawn
    if cfg.what == "all":
        # Every figure whose inputs were given; a figure whose inputs are absent is left out, not an error.
        wanted = [w for w, given in (("recon", cfg.mae and cfg.images), ("rollout", (cfg.mae or cfg.pacx)
                                     and cfg.images), ("lowlabel", cfg.results), ("curves", cfg.logs),
                                     ("stage2", cfg.stage2)) if given]
        if not wanted:
            raise PacxError("--what all: no inputs given (--mae/--pacx with --images, --results, --logs, --stage2)")
    else:
        wanted = [cfg.what]
    device = pick_device(cfg.device)
    out = Path(cfg.out_dir)
    written = []
    for what in wanted:
        if what == "recon":
            written.append(draw_recon(cfg, device, out))
        elif what == "rollout":
            written.append(draw_rollout(cfg, device, out))
        elif what == "lowlabel":
            written.append(draw_lowlabel(cfg, out))
        elif what == "curves":
            written.append(draw_curves(cfg, out))
        else:
            written.append(draw_stage2(cfg, out))
        print(f"wrote {written[-1]}")
    return written


if __name__ == "__main__":
    main()
