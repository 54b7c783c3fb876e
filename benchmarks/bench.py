"""Speed benchmarks of pacx, each printed as a ratio against a reference measured in the same run.

    python -m benchmarks.bench                       # ViT-B, batch 4 on CPU / 128 on CUDA
    python -m benchmarks.bench --device cuda --batch 256 --steps 30 --out bench.json
    python -m benchmarks.bench --quick               # tiny models, a few seconds on CPU (CI)

What is compared (METHOD.md "Stage 1a" and "Stage 2" models, at their reference settings):
1. ViT forward + backward: `pacx.models.vit.VisionTransformer(vit_base())` vs timm `vit_base_patch16_224` with the same
   weights and batch; the time ratio pacx / timm (<= 1 means pacx is as fast or faster).
2. MAE training step (forward, backward, AdamW): `pacx.models.mae.MaskedAutoencoder` vs `OfficialStyleMAE`, the
   facebookresearch/mae `models_mae.py` model rebuilt here from timm's `PatchEmbed` and `Block` as the official code
   builds it, with the official optimizer (plain `torch.optim.AdamW`; pacx uses the fused kernel). Images/s.
3. Stage-2 step (PaCX, LoRA on qkv/fc1/fc2, random ECG / lab targets) vs the same step with every block unfrozen
   (the reference's `last_n` strategy at n = depth): what LoRA's frozen base weights save or cost. Images/s.
4. Data loading, one process and one thread (what one DataLoader worker does): `pacx.data.cache.CachedImages` +
   `mae_train` vs decoding the original files (`ImageFolderList` + `mae_train`), on generated 512 x 512 PNGs or
   `--data`. Images/s per worker.
5. Achieved FLOP/s of the ViT and MAE training steps (matmul FLOPs counted analytically, `vit_train_flops` /
   `mae_train_flops`) as a fraction of a large matmul measured on the same device (fp32 on CPU, bf16 on CUDA), and
   on CUDA as a fraction of the GPU's dense bf16 peak (`BF16_PEAK_TFLOPS`).
Every timing runs warmup steps first, synchronises CUDA around each step, alternates the two contenders step by step
(so background load hits both alike) and reports the median step. bf16 autocast on CUDA for every model (the
official MAE trains in fp16 with a GradScaler; one precision for both keeps the comparison about the code).

timm is a test / benchmark dependency only: it is imported inside the functions that need it.

Notation: B = batch, N = tokens, L = patches, K = kept patches, D = width, Dd = decoder width, P = patch side.
"""
import gc
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from benchmarks.official_mae import OfficialStyleMAE, _timm_vit
from pacx.data.cache import CachedImages, build_cache
from pacx.config import opt, parse_config
from pacx.data.datasets import ImageFolderList
from pacx.dist import init_runtime
from pacx.errors import PacxError, exit_on_error
from benchmarks.flops import mae_train_flops, vit_train_flops
from pacx.models.heads import HeadsConfig
from pacx.models.mae import MAEConfig, MaskedAutoencoder, mae_base, mae_tiny
from pacx.optim import make_adamw, param_groups
from pacx.models.pacx_model import PaCX, PaCXConfig
from pacx.data.transforms import mae_train
from pacx.models.vit import ViTConfig, VisionTransformer

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's data sheets, matched as substrings of
# torch.cuda.get_device_name() in this order (more specific names first).
BF16_PEAK_TFLOPS = (
    ("H200", 989.4), ("H100 NVL", 835.5), ("H100 PCIe", 756.5), ("H100", 989.4),
    ("A100", 312.0), ("L40S", 362.1), ("L40", 181.0), ("L4", 121.0),
)


@dataclass
class Config:
    device: str = opt("auto", "auto | cpu | cuda")
    batch: int = opt(0, "images per step (0: 4 on CPU, 128 on CUDA, 4 with --quick)")
    steps: int = opt(0, "timed steps per measurement, the median is reported (0: 7 on CPU, 20 on CUDA, 3 --quick)")
    warmup: int = opt(2, "untimed steps before each measurement")
    quick: bool = opt(False, "tiny models and images: a few seconds on CPU, for CI")
    data: str = opt("", "folder of images or image CSV for the loading benchmark (default: generated PNGs)")
    image_column: str = opt("Path", "image-path column of a --data CSV")
    load_images: int = opt(0, "images in the loading benchmark (0: 48, 6 with --quick)")
    load_side: int = opt(512, "side of the generated PNGs (96 with --quick)")
    cache_size: int = opt(256, "side stored in the cache (80 with --quick)")
    matmul_size: int = opt(0, "side of the square matmul throughput probe (0: 2048 on CPU, 8192 on CUDA)")
    threads: int = opt(0, "CPU threads of torch (0: torch's default; 1 with --quick, as tiny ops only lose by more)")
    seed: int = opt(0, "seed of the weights, inputs and images")
    out: str = opt("", "also write the results as JSON to this file")


# ---- FLOP counts (matmuls only: 2 FLOPs per multiply-add; norms, softmax, GELU are a few % and not counted) ----

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_step_seconds(fns: dict[str, Callable[[], None]], warmup: int, steps: int,
                        device: torch.device) -> dict[str, float]:
    """Median wall time of one call of each function; the calls alternate, so drifting load hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def _train_step(model: nn.Module, optimizer, loss_fn: Callable[[], torch.Tensor], autocast, clip: float = 0.0):
    def step():
        with autocast():
            loss = loss_fn()
        if optimizer is None:
            model.zero_grad(set_to_none=True)
        else:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], clip)
        if optimizer is not None:
            optimizer.step()

    return step


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- the benchmarks ----

def bench_vit(vit_cfg: ViTConfig, batch: int, run, rt) -> dict:
    """pacx ViT vs timm's vit_base_patch16_224 (the same architecture at vit_cfg's sizes), forward + backward."""
    vit = _timm_vit()
    ours = VisionTransformer(vit_cfg).to(rt.device)
    theirs = vit.VisionTransformer(img_size=vit_cfg.img_size, patch_size=vit_cfg.patch_size,
                                   embed_dim=vit_cfg.embed_dim, depth=vit_cfg.depth, num_heads=vit_cfg.num_heads,
                                   mlp_ratio=vit_cfg.mlp_ratio, qkv_bias=vit_cfg.qkv_bias, num_classes=0)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    theirs.pos_embed.requires_grad_(False)  # fixed in pacx (sin-cos): the same work on both sides
    theirs.to(rt.device)
    x = torch.randn(batch, 3, vit_cfg.img_size, vit_cfg.img_size, device=rt.device)
    with torch.no_grad():
        diff = (ours(x) - theirs(x)).abs().max().item()
    t = median_step_seconds({
        "pacx": _train_step(ours, None, lambda: ours(x).float().square().mean(), rt.autocast),
        "timm": _train_step(theirs, None, lambda: theirs(x).float().square().mean(), rt.autocast),
    }, *run)
    flops = vit_train_flops(vit_cfg, batch)
    return {"vit_pacx_s": t["pacx"], "vit_timm_s": t["timm"], "vit_time_ratio": t["pacx"] / t["timm"],
            "vit_pacx_tflops": flops / t["pacx"] / 1e12, "_vit_max_abs_diff": diff}


def bench_mae(mae_cfg: MAEConfig, batch: int, run, rt, mask_ratio: float = 0.9) -> dict:
    ours = MaskedAutoencoder(mae_cfg).to(rt.device)
    theirs = OfficialStyleMAE(mae_cfg)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    theirs.to(rt.device)
    S, L = mae_cfg.encoder.img_size, mae_cfg.encoder.num_patches
    x = torch.randn(batch, 3, S, S, device=rt.device)
    noise = torch.rand(batch, L, device=rt.device)
    with torch.no_grad():
        diff = (ours(x, mask_ratio, noise)[0] - theirs(x, mask_ratio, noise)[0]).abs().item()
    opt_ours = make_adamw(param_groups(ours, 0.05), 1.5e-4, (0.9, 0.95))
    opt_theirs = torch.optim.AdamW(param_groups(theirs, 0.05), lr=1.5e-4, betas=(0.9, 0.95))  # as main_pretrain.py
    t = median_step_seconds({
        "pacx": _train_step(ours, opt_ours, lambda: ours(x, mask_ratio, noise)[0], rt.autocast),
        "official": _train_step(theirs, opt_theirs, lambda: theirs(x, mask_ratio, noise)[0], rt.autocast),
    }, *run)
    flops = mae_train_flops(mae_cfg, batch, mask_ratio)
    return {"mae_pacx_img_s": batch / t["pacx"], "mae_official_img_s": batch / t["official"],
            "mae_speed_ratio": t["official"] / t["pacx"], "mae_pacx_tflops": flops / t["pacx"] / 1e12,
            "_mae_loss_abs_diff": diff}


def bench_stage2(vit_cfg: ViTConfig, batch: int, run, rt) -> dict:
    heads = HeadsConfig(cxr_dim=vit_cfg.embed_dim)
    lora = PaCX(PaCXConfig(vit_cfg, heads)).to(rt.device)
    full = PaCX(PaCXConfig(vit_cfg, heads, strategy="last_n", last_n=vit_cfg.depth)).to(rt.device)
    x = torch.randn(batch, 3, vit_cfg.img_size, vit_cfg.img_size, device=rt.device)
    ecg = torch.randn(batch, heads.ecg_dim, device=rt.device)
    labs = torch.randn(batch, heads.labs_dim, device=rt.device)
    steps = {}
    for name, model in (("lora", lora), ("all_blocks", full)):
        optimizer = make_adamw(param_groups(model, 0.05, decay_all=True), 1e-4)
        steps[name] = _train_step(model, optimizer, lambda m=model: m(x, ecg, labs)[0], rt.autocast, clip=1.0)
    t = median_step_seconds(steps, *run)
    return {"stage2_lora_img_s": batch / t["lora"], "stage2_all_blocks_img_s": batch / t["all_blocks"],
            "stage2_speed_ratio": t["all_blocks"] / t["lora"]}


def write_pngs(folder: Path, n: int, side: int, seed: int) -> None:
    """Gray PNGs with smooth structure plus noise: they compress (and decode) roughly like radiographs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:side, :side] / side
    for k in range(n):
        a, b = rng.uniform(2, 8, size=2)
        img = 128 + 70 * np.sin(a * 3.1 * x) * np.cos(b * 2.3 * y) + rng.normal(0, 6, (side, side))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{k:05d}.png")


def bench_loading(cfg: Config, n: int, side: int, cache_size: int, img_size: int, repeats: int) -> dict:
    """Images/s of one single-threaded process (a DataLoader worker) producing MAE training inputs."""
    with tempfile.TemporaryDirectory() as tmp:
        if cfg.data:
            from pacx.data.stage1 import image_dataset

            files = image_dataset(cfg.data, cfg.image_column)
            n = min(n, len(files))
        else:
            write_pngs(Path(tmp) / "png", n, side, cfg.seed)
            files = ImageFolderList(Path(tmp) / "png")
        t0 = time.perf_counter()
        cached = CachedImages(build_cache(files.paths[:n], Path(tmp) / "cache", cache_size, workers=0, log=None))
        build_rate = n / (time.perf_counter() - t0)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            def rate(ds):
                g = torch.Generator().manual_seed(cfg.seed)
                t0 = time.perf_counter()
                for i in range(n):
                    mae_train(ds[i]["image"], g, img_size)
                return n / (time.perf_counter() - t0)

            rates = {"cache": [], "decode": []}
            rate(cached), rate(files)  # warm the page cache for both
            for _ in range(repeats):
                rates["cache"].append(rate(cached))
                rates["decode"].append(rate(files))
        finally:
            torch.set_num_threads(threads)
    cache_rate, decode_rate = statistics.median(rates["cache"]), statistics.median(rates["decode"])
    return {"load_cache_img_s": cache_rate, "load_decode_img_s": decode_rate,
            "load_speed_ratio": cache_rate / decode_rate, "cache_build_img_s": build_rate}


def bench_matmul(side: int, run, rt) -> dict:
    dtype = torch.bfloat16 if rt.device.type == "cuda" else torch.float32
    a = torch.randn(side, side, device=rt.device, dtype=dtype)
    b = torch.randn(side, side, device=rt.device, dtype=dtype)
    t = median_step_seconds({"mm": lambda: a @ b}, *run)["mm"]
    return {"matmul_tflops": 2 * side**3 / t / 1e12}


def bf16_peak_tflops(name: str) -> float | None:
    for key, peak in BF16_PEAK_TFLOPS:
        if key.lower() in name.lower():
            return peak
    return None


def _row(title: str, a: str, b: str, ratio_name: str, ratio: float, note: str = "") -> str:
    return f"{title:<24} {a:<20} {b:<26} {ratio_name} {ratio:.3f}" + (f"  ({note})" if note else "")


def run_all(cfg: Config, rt, log: Callable[[str], None] = print) -> dict:
    cuda = rt.device.type == "cuda"
    batch = cfg.batch or (4 if cfg.quick or not cuda else 128)
    steps = cfg.steps or (3 if cfg.quick else 20 if cuda else 7)
    warmup = 1 if cfg.quick else cfg.warmup
    run = (warmup, steps, rt.device)
    mae_cfg = mae_tiny() if cfg.quick else mae_base()
    vit_cfg = mae_cfg.encoder
    device_name = torch.cuda.get_device_name(rt.device) if cuda else f"CPU ({torch.get_num_threads()} torch threads)"
    log(f"benchmarks.bench on {device_name}: {'tiny models (--quick)' if cfg.quick else 'ViT-B/16'}, batch {batch}, "
        f"median of {steps} steps after {warmup} warmup, {'bf16 autocast' if cuda else 'fp32'}")

    r = bench_vit(vit_cfg, batch, run, rt)
    log(_row("ViT forward+backward", f"pacx {r['vit_pacx_s'] * 1e3:.1f} ms", f"timm {r['vit_timm_s'] * 1e3:.1f} ms",
             "time ratio pacx/timm", r["vit_time_ratio"],
             f"<= 1: pacx as fast or faster; outputs differ by {r['_vit_max_abs_diff']:.1e}"))
    _free()
    r.update(bench_mae(mae_cfg, batch, run, rt))
    log(_row("MAE train step", f"pacx {r['mae_pacx_img_s']:.1f} img/s", f"official {r['mae_official_img_s']:.1f} img/s",
             "speed ratio pacx/official", r["mae_speed_ratio"],
             f">= 1: pacx as fast or faster; losses differ by {r['_mae_loss_abs_diff']:.1e}"))
    _free()
    r.update(bench_stage2(vit_cfg, batch, run, rt))
    log(_row("Stage-2 train step", f"LoRA {r['stage2_lora_img_s']:.1f} img/s",
             f"all blocks {r['stage2_all_blocks_img_s']:.1f} img/s", "speed ratio LoRA/all-blocks",
             r["stage2_speed_ratio"]))
    _free()
    n = cfg.load_images or (6 if cfg.quick else 48)
    side = 96 if cfg.quick and cfg.load_side == Config.load_side else cfg.load_side
    cache_size = 80 if cfg.quick and cfg.cache_size == Config.cache_size else cfg.cache_size
    r.update(bench_loading(cfg, n, side, cache_size, vit_cfg.img_size, repeats=steps))
    source = cfg.data or f"{n} generated {side} x {side} PNGs"
    log(_row("Data loading per worker", f"cache {r['load_cache_img_s']:.1f} img/s",
             f"decode {r['load_decode_img_s']:.1f} img/s", "speed ratio cache/decode", r["load_speed_ratio"],
             f"{source}; {cache_size} px cache built at {r['cache_build_img_s']:.1f} img/s"))
    r.update(bench_matmul(cfg.matmul_size or (256 if cfg.quick else 8192 if cuda else 2048), run, rt))
    r["vit_matmul_fraction"] = r["vit_pacx_tflops"] / r["matmul_tflops"]
    r["mae_matmul_fraction"] = r["mae_pacx_tflops"] / r["matmul_tflops"]
    log(f"Achieved FLOP/s          ViT {r['vit_pacx_tflops']:.3f} TFLOP/s = {r['vit_matmul_fraction']:.2f} and MAE "
        f"{r['mae_pacx_tflops']:.3f} TFLOP/s = {r['mae_matmul_fraction']:.2f} of a measured "
        f"{'bf16' if cuda else 'fp32'} matmul ({r['matmul_tflops']:.3f} TFLOP/s)")
    peak = bf16_peak_tflops(device_name) if cuda else None
    if peak:
        r["gpu_peak_tflops"] = peak
        r["vit_peak_fraction"] = r["vit_pacx_tflops"] / peak
        r["mae_peak_fraction"] = r["mae_pacx_tflops"] / peak
        log(f"Model FLOP utilisation   ViT {r['vit_peak_fraction']:.3f}, MAE {r['mae_peak_fraction']:.3f} of the "
            f"{peak:.0f} TFLOP/s dense bf16 peak of the {device_name}")
    elif cuda:
        log(f"Model FLOP utilisation   unknown bf16 peak for {device_name!r} (add it to BF16_PEAK_TFLOPS)")
    checks = {k[1:]: r.pop(k) for k in [k for k in r if k.startswith("_")]}
    return {"device": device_name, "batch": batch, "steps": steps, "warmup": warmup, "torch": torch.__version__,
            "config": asdict(cfg), "results": r, "checks": checks}


def run_benchmark(config_cls, run_all: Callable, argv=None, doc: str = "") -> None:
    """The command line of a benchmark module: parse `config_cls`, set up the device and threads, `run_all(cfg, rt)`,
    write the report as JSON when `--out` is given (both benchmarks.bench and benchmarks.fast_paths)."""
    cfg = parse_config(config_cls, argv, doc)
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise PacxError(f"--device: expected auto, cpu or cuda, got {cfg.device!r}")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise PacxError("--device cuda: torch sees no CUDA device here (try --device cpu)")
    rt = init_runtime(cfg.device, cfg.seed)
    threads = torch.get_num_threads()
    if cfg.threads or cfg.quick:
        torch.set_num_threads(cfg.threads or 1)
    try:
        report = run_all(cfg, rt)
    finally:
        torch.set_num_threads(threads)  # as it was, for a caller that runs main() in its own process (tests)
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(report, indent=2))
        print(f"results written to {cfg.out}")


@exit_on_error
def main(argv=None):
    run_benchmark(Config, run_all, argv, __doc__)


if __name__ == "__main__":
    main()
