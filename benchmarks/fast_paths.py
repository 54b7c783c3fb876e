"""Each fast path of pacx measured on and off in one run: the speed-up it brings on this device.

    python -m benchmarks.fast_paths                  # ViT-B, batch 4 on CPU / 64 on CUDA
    python -m benchmarks.fast_paths --quick          # tiny models, seconds on CPU (CI)
    python -m benchmarks.fast_paths --device cuda --compile --out fast_paths.json

"on" is what the training scripts do, "off" the plain alternative; the ratio is time(off) / time(on), so > 1 means
the fast path pays. Paths that only act on a GPU (bf16 autocast, pinned non-blocking copies, host syncs) are measured
on CUDA and reported as skipped on CPU.
- attention: `F.scaled_dot_product_attention` (flash / memory-efficient kernels on CUDA) vs the explicit softmax
  (`return_attn=True`, the rollout path), ViT forward + backward;
- autocast: bf16 autocast vs fp32, ViT forward + backward (CUDA);
- fused AdamW: one `torch.optim.AdamW(fused=True)` step over ViT-B's parameters vs the default implementation (a
  per-tensor loop on CPU, the for-each kernels on CUDA: what the official MAE code gets);
- host sync: an MAE step that keeps its loss on the device (`pacx.runlog.LossMeter`) vs one that calls `.item()`;
- pinned copies: a uint8 batch copied from pinned memory with `non_blocking=True` vs from pageable memory (CUDA);
- one-channel augmentation: `mae_train` on a gray image (geometry on one channel, `one_channel`) vs the same crop,
  resize and flip on three channels, on one thread as in a DataLoader worker;
- gradient accumulation: 2 gloo processes, 2 micro-batches per step, `DistributedDataParallel.no_sync` on the
  first (`pacx.dist.sync_gradients`) vs an all-reduce after every micro-batch;
- torch.compile (only with `--compile`, it compiles for a minute or more): the MAE step compiled vs eager.
"""
import contextlib
import json
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.bench import _free, _train_step, median_step_seconds, run_benchmark
from pacx.config import opt
from pacx.dist import micro_batches, sync_gradients
from pacx.errors import exit_on_error
from pacx.models.mae import MaskedAutoencoder, mae_base, mae_tiny
from pacx.optim import make_adamw, param_groups
from pacx.data.transforms import mae_train
from pacx.models.vit import VisionTransformer


@dataclass
class Config:
    device: str = opt("auto", "auto | cpu | cuda")
    batch: int = opt(0, "images per step (0: 4 on CPU, 64 on CUDA, 4 with --quick)")
    steps: int = opt(0, "timed steps per measurement, the median is reported (0: 5 on CPU, 20 on CUDA, 3 --quick)")
    warmup: int = opt(2, "untimed steps before each measurement")
    quick: bool = opt(False, "tiny models: seconds on CPU, for CI")
    compile: bool = opt(False, "also measure torch.compile (slow to compile)")
    threads: int = opt(0, "CPU threads of torch (0: torch's default; 1 with --quick)")
    seed: int = opt(0, "seed of the weights and inputs")
    out: str = opt("", "also write the results as JSON to this file")


def _ratio(t: dict) -> dict:
    return {"on_s": t["on"], "off_s": t["off"], "speedup": t["off"] / t["on"]}


def attention(vit_cfg, x, run, rt) -> dict:
    model = VisionTransformer(vit_cfg).to(rt.device)
    fns = {"on": _train_step(model, None, lambda: model(x).float().square().mean(), rt.autocast),
           "off": _train_step(model, None,
                              lambda: model.forward_features(x, return_attn=True)[0][:, 0].float().square().mean(),
                              rt.autocast)}
    return _ratio(median_step_seconds(fns, *run))


def autocast(vit_cfg, x, run, rt) -> dict:
    model = VisionTransformer(vit_cfg).to(rt.device)
    loss = lambda: model(x).float().square().mean()  # noqa: E731
    return _ratio(median_step_seconds({"on": _train_step(model, None, loss, rt.autocast),
                                       "off": _train_step(model, None, loss, contextlib.nullcontext)}, *run))


def fused_adamw(vit_cfg, run, rt) -> dict:
    fns = {}
    for name, fused in (("on", True), ("off", False)):
        model = VisionTransformer(vit_cfg).to(rt.device)
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        opt_ = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-4, betas=(0.9, 0.95), fused=fused)
        fns[name] = opt_.step
    return _ratio(median_step_seconds(fns, *run))


def host_sync(mae_cfg, x, run, rt) -> dict:
    model = MaskedAutoencoder(mae_cfg).to(rt.device)
    optimizer = make_adamw(param_groups(model, 0.05), 1.5e-4, (0.9, 0.95))
    on = _train_step(model, optimizer, lambda: model(x, 0.9)[0], rt.autocast)  # the loss stays on the device

    def off():
        with rt.autocast():
            loss = model(x, 0.9)[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()  # waits for the GPU every step

    return _ratio(median_step_seconds({"on": on, "off": off}, *run))


def pinned_copies(batch, size, run, rt) -> dict:
    pageable = torch.randint(0, 255, (batch, 3, size, size), dtype=torch.uint8)
    pinned = pageable.pin_memory()
    return _ratio(median_step_seconds({"on": lambda: pinned.to(rt.device, non_blocking=True),
                                       "off": lambda: pageable.to(rt.device)}, *run))


def one_channel_augmentation(size, run, rt) -> dict:
    """On one thread, as in a DataLoader worker (with several threads the 3-channel resize parallelises better)."""
    gray = torch.randint(0, 255, (1, 512, 512), dtype=torch.uint8).expand(3, -1, -1).clone()
    colour = gray.clone()
    colour[2, 0, 0] ^= 1  # one pixel off: `one_channel` must keep 3 channels, the work is the 3-channel geometry
    g = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    warmup, steps, device = run
    try:  # a millisecond per call: many more calls than a model step needs for a stable median
        return _ratio(median_step_seconds({"on": lambda: mae_train(gray, g, size),
                                           "off": lambda: mae_train(colour, g, size)}, warmup, 20 * steps, device))
    finally:
        torch.set_num_threads(threads)


def compiled(mae_cfg, x, run, rt) -> dict:
    fns = {}
    for name, wrap in (("on", torch.compile), ("off", lambda m: m)):
        torch.manual_seed(0)
        model = MaskedAutoencoder(mae_cfg).to(rt.device)
        optimizer = make_adamw(param_groups(model, 0.05), 1.5e-4, (0.9, 0.95))
        fn = wrap(model)
        fns[name] = _train_step(model, optimizer, lambda f=fn: f(x, 0.9)[0], rt.autocast)
    return _ratio(median_step_seconds(fns, *run))


# ---- gradient accumulation: two gloo processes ----

def _accumulation_worker(rank: int, port: int, model_name: str, batch: int, steps: int, warmup: int, out: str):
    os.environ.update(OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    cfg = (mae_tiny if model_name == "tiny" else mae_base)().encoder
    model = torch.nn.parallel.DistributedDataParallel(VisionTransformer(cfg))
    x = torch.randn(max(batch, 4), 3, cfg.img_size, cfg.img_size)

    def step(use_no_sync: bool):
        parts = micro_batches([x], 2)  # micro-batches of 2 images or more (DDP's bucket layout expects B > 1)
        for i, ([xm], w) in enumerate(parts):
            last = i == len(parts) - 1
            with sync_gradients(model, sync=last or not use_no_sync):
                (model(xm).square().mean() * w).backward()
        model.zero_grad(set_to_none=True)

    def timed(use_no_sync):
        for _ in range(warmup):
            step(use_no_sync)
        times = []
        for _ in range(steps):
            dist.barrier()
            t0 = time.perf_counter()
            step(use_no_sync)
            times.append(time.perf_counter() - t0)
        return sorted(times)[len(times) // 2]

    t = {name: timed(flag) for name, flag in (("on", True), ("off", False))}
    if rank == 0:
        Path(out).write_text(json.dumps(t))
    dist.destroy_process_group()


def accumulation(model_name: str, batch: int, steps: int, warmup: int) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "t.json")
        mp.spawn(_accumulation_worker, args=(port, model_name, batch, steps, warmup, out), nprocs=2)
        return _ratio(json.loads(Path(out).read_text()))


ROWS = {
    "attention": "SDPA vs explicit softmax attention, ViT fwd+bwd",
    "autocast": "bf16 autocast vs fp32, ViT fwd+bwd",
    "fused_adamw": "fused vs default AdamW step, ViT params",
    "host_sync": "loss kept on device vs .item() per MAE step",
    "pinned_copies": "pinned non-blocking vs pageable uint8 copy",
    "one_channel_augmentation": "mae_train geometry on 1 vs 3 channels",
    "accumulation": "no_sync vs all-reduce per micro-batch (2 gloo procs)",
    "compile": "torch.compile vs eager MAE step",
}


def run_all(cfg: Config, rt, log=print) -> dict:
    cuda = rt.device.type == "cuda"
    batch = cfg.batch or (64 if cuda and not cfg.quick else 4)
    steps = cfg.steps or (3 if cfg.quick else 20 if cuda else 5)
    warmup = 1 if cfg.quick else cfg.warmup
    run = (warmup, steps, rt.device)
    mae_cfg = mae_tiny() if cfg.quick else mae_base()
    vit_cfg = mae_cfg.encoder
    torch.manual_seed(cfg.seed)
    x = torch.randn(batch, 3, vit_cfg.img_size, vit_cfg.img_size, device=rt.device)
    device_name = torch.cuda.get_device_name(rt.device) if cuda else f"CPU ({torch.get_num_threads()} torch threads)"
    log(f"benchmarks.fast_paths on {device_name}: {'tiny models' if cfg.quick else 'ViT-B/16'}, batch {batch}, "
        f"median of {steps} steps after {warmup} warmup; speed-up = time(off) / time(on)")
    measures = {
        "attention": lambda: attention(vit_cfg, x, run, rt),
        "autocast": (lambda: autocast(vit_cfg, x, run, rt)) if cuda else None,
        "fused_adamw": lambda: fused_adamw(vit_cfg, run, rt),
        "host_sync": (lambda: host_sync(mae_cfg, x, run, rt)) if cuda else None,
        "pinned_copies": (lambda: pinned_copies(batch, vit_cfg.img_size, run, rt)) if cuda else None,
        "one_channel_augmentation": lambda: one_channel_augmentation(vit_cfg.img_size, run, rt),
        "accumulation": lambda: accumulation("tiny" if cfg.quick else "base", batch, steps, warmup),
        "compile": (lambda: compiled(mae_cfg, x, run, rt)) if cfg.compile else None,
    }
    results = {}
    for name, fn in measures.items():
        if fn is None:
            log(f"{ROWS[name]:<54} skipped ({'needs --compile' if name == 'compile' else 'CUDA only'})")
            continue
        r = results[name] = fn()
        log(f"{ROWS[name]:<54} on {r['on_s'] * 1e3:9.2f} ms  off {r['off_s'] * 1e3:9.2f} ms  "
            f"speed-up {r['speedup']:.2f}")
        _free()
    return {"device": device_name, "batch": batch, "steps": steps, "warmup": warmup, "torch": torch.__version__,
            "config": asdict(cfg), "results": results}


@exit_on_error
def main(argv=None):
    run_benchmark(Config, run_all, argv, __doc__)


if __name__ == "__main__":
    main()
