"""Tests for benchmarks/bench.py: the analytic FLOP counts against torch's FlopCounterMode, the official-style MAE
baseline
against pacx's MAE (same weights -> same loss, prediction and gradients), the GPU peak table, that importing the
module does not import timm, and a `--quick` run printing every ratio line and writing finite positive results."""
import json
import math
import subprocess
import sys

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.bench import bf16_peak_tflops, main
from benchmarks.official_mae import OfficialStyleMAE
from benchmarks.flops import mae_train_flops, vit_train_flops
from pacx.models.mae import MaskedAutoencoder, mae_tiny
from pacx.models.vit import VisionTransformer, vit_tiny

RESULT_KEYS = (
    "vit_pacx_s", "vit_timm_s", "vit_time_ratio", "vit_pacx_tflops",
    "mae_pacx_img_s", "mae_official_img_s", "mae_speed_ratio", "mae_pacx_tflops",
    "stage2_lora_img_s", "stage2_all_blocks_img_s", "stage2_speed_ratio",
    "load_cache_img_s", "load_decode_img_s", "load_speed_ratio", "cache_build_img_s",
    "matmul_tflops", "vit_matmul_fraction", "mae_matmul_fraction",
)
LINES = ("ViT forward+backward", "MAE train step", "Stage-2 train step", "Data loading per worker", "Achieved FLOP/s")


def counted_flops(fn) -> int:
    """Matmul FLOPs of fn() as torch counts them; the math attention backend spells attention out as matmuls
    (the fused CPU kernel is not in FlopCounterMode's table)."""
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("registers", [0, 2])
def test_vit_flops_match_flop_counter(registers):
    torch.manual_seed(0)
    cfg = vit_tiny(num_registers=registers)
    model = VisionTransformer(cfg)
    x = torch.randn(3, 3, cfg.img_size, cfg.img_size)
    assert counted_flops(lambda: model(x).square().mean().backward()) == vit_train_flops(cfg, 3)


@pytest.mark.parametrize("mask_ratio", [0.75, 0.9])
def test_mae_flops_match_flop_counter(mask_ratio):
    torch.manual_seed(0)
    cfg = mae_tiny()
    model = MaskedAutoencoder(cfg)
    x = torch.randn(2, 3, cfg.encoder.img_size, cfg.encoder.img_size)
    assert counted_flops(lambda: model(x, mask_ratio)[0].backward()) == mae_train_flops(cfg, 2, mask_ratio)


def test_official_style_mae_computes_what_pacx_computes():
    torch.manual_seed(0)
    cfg = mae_tiny(norm_pix_loss=True)
    ours, theirs = MaskedAutoencoder(cfg), OfficialStyleMAE(cfg)
    theirs.load_state_dict(ours.state_dict(), strict=True)  # the official parameter names
    x = torch.randn(2, 3, cfg.encoder.img_size, cfg.encoder.img_size)
    noise = torch.rand(2, cfg.encoder.num_patches)
    loss_a, pred_a, mask_a = ours(x, 0.75, noise)
    loss_b, pred_b, mask_b = theirs(x, 0.75, noise)
    torch.testing.assert_close(pred_a, pred_b)
    assert torch.equal(mask_a, mask_b)
    torch.testing.assert_close(loss_a, loss_b)
    loss_a.backward()
    loss_b.backward()
    grads_b = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, grads_b[name].grad, msg=name)


def test_bf16_peaks_by_device_name():
    assert bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert bf16_peak_tflops("NVIDIA H100 PCIe") == 756.5
    assert bf16_peak_tflops("NVIDIA H200") == 989.4
    assert bf16_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bf16_peak_tflops("NVIDIA L40S") == 362.1 and bf16_peak_tflops("NVIDIA L4") == 121.0
    assert bf16_peak_tflops("Some Future GPU") is None


def test_import_does_not_import_timm():
    code = "import sys, benchmarks.bench, pacx.data.cache; assert 'timm' not in sys.modules, 'timm imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_quick_run_prints_every_ratio_and_writes_json(tmp_path, capsys):
    threads = torch.get_num_threads()
    main(["--quick", "--device", "cpu", "--out", str(tmp_path / "bench.json")])
    assert torch.get_num_threads() == threads  # restored for the rest of this process
    out = capsys.readouterr().out
    for line in LINES:
        assert line in out, line
    assert out.count("ratio") >= 4
    report = json.loads((tmp_path / "bench.json").read_text())
    for key in RESULT_KEYS:
        value = report["results"][key]
        assert math.isfinite(value) and value > 0, (key, value)
    # the contenders compute the same function: the speed ratios compare like with like
    assert report["checks"]["vit_max_abs_diff"] < 1e-4
    assert report["checks"]["mae_loss_abs_diff"] < 1e-5


def test_fast_paths_quick_run_measures_every_cpu_path(tmp_path, capsys):
    from benchmarks import fast_paths

    fast_paths.main(["--quick", "--device", "cpu", "--steps", "1", "--out", str(tmp_path / "f.json")])
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "f.json").read_text())["results"]
    cpu_paths = {"attention", "fused_adamw", "one_channel_augmentation", "accumulation"}
    assert set(results) == cpu_paths
    for name, r in results.items():
        assert r["on_s"] > 0 and r["off_s"] > 0 and math.isclose(r["speedup"], r["off_s"] / r["on_s"]), name
        assert fast_paths.ROWS[name] in out
    assert out.count("skipped (CUDA only)") == 3 and "skipped (needs --compile)" in out
