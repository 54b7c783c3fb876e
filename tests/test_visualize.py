"""visualize.py and pacx/eval/plots.py: the reconstruction panels against hand indexing, rollout maps against an
independently loaded ViT, the low-label and curve readers against the numbers written, and every PNG's size."""
import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image

import visualize
from pacx.eval import plots
from pacx.models.mae import MaskedAutoencoder, mae_tiny
from pacx.eval.rollout import rollout_input, rollout_map
from pacx.data.transforms import IMAGENET_MEAN, normalize
from pacx.models.vit import VisionTransformer, vit_tiny

N_IMAGES = 3


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny pacx Stage-1 checkpoint, a Stage-2-style ViT export, an encoder-only file, images, logs, results."""
    d = tmp_path_factory.mktemp("vis")
    torch.manual_seed(0)
    mae = MaskedAutoencoder(mae_tiny())
    torch.save({"model": mae.state_dict(), "config": {"kind": "mae", **asdict(mae.mae_cfg)}}, d / "last.pt")
    torch.save({"model": mae.encoder_state_dict()}, d / "encoder_only.pth")
    vit = VisionTransformer(vit_tiny())
    torch.save({"model": vit.state_dict(), "config": {"kind": "vit", **asdict(vit.cfg)}}, d / "encoder.pt")
    (d / "imgs").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:80, :72]
    for i in range(N_IMAGES + 1):
        cy, cx, r = rng.integers(20, 60), rng.integers(20, 50), rng.integers(8, 20)
        img = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, 200, 40) + rng.integers(0, 20, (80, 72))
        Image.fromarray(img.astype(np.uint8)).save(d / "imgs" / f"img{i}.png")
    (d / "run").mkdir()
    lines = [{"step": s, "epoch": s // 4, "loss": 1.0 / s, "lr": 1e-4 * s / 8, "img_per_s": 50.0} for s in range(1, 9)]
    lines += [{"step": 4, "epoch": 0, "val_loss": 0.9, "val_ecg_top1": 0.2},
              {"step": 8, "epoch": 1, "val_loss": 0.7, "val_ecg_top1": 0.4}]
    (d / "run" / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (d / "results.json").write_text(json.dumps(EVALUATE_RESULTS))
    return {"dir": d, "mae": mae, "vit": vit}


def ci(median, lo, hi, value=None):
    return {"value": median if value is None else value, "median": median, "lo": lo, "hi": hi, "n_resamples": 500}


# evaluate.py's layout: classification -> fractions -> backbones -> test -> metric -> interval.
# AUROC median 0.6 + 0.1 k (+ 0.02 for pacx) +- 0.05 at the k-th fraction; an F1 without a median (all resamples
# undefined) at 1% for mae.
EVALUATE_RESULTS = {"reference": "mae", "classification": {
    "task": "nih", "task_type": "multilabel", "mode": "probe",
    "fractions": {f: {"n_train": 10, "backbones": {b: {"test": {
        "auroc": ci(0.6 + 0.1 * k + 0.02 * j, 0.55 + 0.1 * k + 0.02 * j, 0.65 + 0.1 * k + 0.02 * j, value=0.5),
        "f1": ci(None, None, None, value=0.3) if (f, b) == ("0.01", "mae") else ci(0.2, 0.1, 0.3),
        "accuracy": ci(0.9, 0.8, 0.95)}} for j, b in enumerate(("mae", "pacx"))}}
        for k, f in enumerate(("0.01", "0.1", "1"))}}}


def png_size(path):
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.load()
        return img.size


def run(args):
    return visualize.main([str(a) for a in args])


def capture(monkeypatch, name):
    """Record the arguments a plots.<name> call gets, and still draw the figure."""
    seen = {}
    real = getattr(plots, name)

    def spy(path, rows, *args, **kw):
        seen["rows"] = rows
        return real(path, rows, *args, **kw)

    monkeypatch.setattr(plots, name, spy)
    return seen


# ---- reconstruction ----

@pytest.mark.parametrize("norm_pix", [False, True])
def test_compose_reconstruction_by_hand(norm_pix):
    g = torch.Generator().manual_seed(0)
    B, P, G = 2, 4, 3
    imgs = torch.randn(B, 3, G * P, G * P, generator=g)
    pred = torch.randn(B, G * G, P * P * 3, generator=g)
    mask = (torch.rand(B, G * G, generator=g) > 0.5).float()
    out = plots.compose_reconstruction(imgs, pred, mask, P, norm_pix_loss=norm_pix)
    for b in range(B):
        for l in range(G * G):
            h, w = divmod(l, G)  # patch index h*G + w
            block = (b, slice(None), slice(h * P, (h + 1) * P), slice(w * P, (w + 1) * P))
            truth = imgs[block]  # (3, P, P)
            guess = pred[b, l].reshape(P, P, 3).permute(2, 0, 1)  # the vector is ordered (row, column, channel)
            if norm_pix:  # back from the per-patch normalised space with the true patch's mean and unbiased std
                t = truth.permute(1, 2, 0).reshape(-1).numpy().astype(np.float64)
                guess = guess * float(np.sqrt(t.var(ddof=1) + 1e-6)) + float(t.mean())
            assert torch.allclose(out["recon"][block], guess, atol=1e-5)
            if mask[b, l]:
                assert torch.equal(out["masked"][block], torch.zeros_like(truth))
                assert torch.allclose(out["pasted"][block], guess, atol=1e-5)
            else:
                assert torch.equal(out["masked"][block], truth)
                assert torch.equal(out["pasted"][block], truth)


def test_recon_figure(world, monkeypatch, tmp_path):
    seen = capture(monkeypatch, "plot_reconstructions")
    args = ["--what", "recon", "--mae", world["dir"] / "last.pt", "--images", world["dir"] / "imgs",
            "--num_images", N_IMAGES, "--mask_ratio", 0.75, "--device", "cpu"]
    (path,) = run(args + ["--out_dir", tmp_path / "a"])
    assert png_size(path) == (1200, 300 * N_IMAGES)
    rows = seen["rows"]
    assert [r["name"] for r in rows] == [f"img{i}.png" for i in range(N_IMAGES)]
    for r in rows:
        # 64 px, 8 px patches: 16 of 64 patches stay visible; pasted = original there, = reconstruction elsewhere.
        visible = np.isclose(r["pasted"], r["original"], atol=1e-6).all(-1)  # (S, S)
        patches = visible.reshape(8, 8, 8, 8).all(axis=(1, 3))  # (G, G)
        assert patches.sum() == 16
        assert np.allclose(r["pasted"][~visible], r["recon"][~visible], atol=1e-6)
        assert np.allclose(r["masked"][~visible], IMAGENET_MEAN, atol=1e-6)  # zeroed in the normalised space
    # the mask comes from --seed: the same seed draws the same figure, another seed another one
    (again,) = run(args + ["--out_dir", tmp_path / "b"])
    (other,) = run(args + ["--out_dir", tmp_path / "c", "--seed", 1])
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(again)))
    assert not np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(other)))


def test_recon_refuses_an_encoder_only_checkpoint(world, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run(["--what", "recon", "--mae", world["dir"] / "encoder_only.pth", "--model", "tiny",
             "--images", world["dir"] / "imgs", "--out_dir", tmp_path])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "holds no MAE decoder" in err and len(err.splitlines()) == 1


# ---- attention rollout ----

@pytest.mark.parametrize("imagenet_norm", [False, True])
def test_rollout_figure_maps(world, monkeypatch, tmp_path, imagenet_norm):
    seen = capture(monkeypatch, "plot_rollouts")
    (path,) = run(["--what", "rollout", "--mae", world["dir"] / "last.pt", "--pacx", world["dir"] / "encoder.pt",
                   "--images", world["dir"] / "imgs", "--num_images", N_IMAGES, "--device", "cpu",
                   "--rollout_imagenet_norm", imagenet_norm, "--out_dir", tmp_path])
    assert png_size(path) == (1200, 300 * N_IMAGES)
    # Independent: the MAE encoder's weights copied straight into a ViT, images read with PIL.
    mae_vit = VisionTransformer(vit_tiny())
    mae_vit.load_state_dict(world["mae"].encoder_state_dict())
    imgs = [torch.from_numpy(np.array(Image.open(world["dir"] / "imgs" / f"img{i}.png"))).expand(3, -1, -1)
            for i in range(N_IMAGES)]
    x01 = torch.stack([rollout_input(im, 64) for im in imgs])  # (B, 3, 64, 64) in [0, 1]
    x = torch.stack([normalize((t * 255).round().to(torch.uint8)) for t in x01]) if imagenet_norm else x01
    want = [rollout_map(mae_vit, x).numpy(), rollout_map(world["vit"], x).numpy()]
    for b, row in enumerate(seen["rows"]):
        assert np.allclose(row["gray"], x01[b].mean(0).numpy(), atol=1e-6)
        for got, w in zip(row["maps"], want):
            assert np.allclose(got, w[b], atol=1e-5)
            assert got.min() == pytest.approx(0, abs=1e-6) and got.max() == pytest.approx(1, abs=1e-3)  # min-max
    other = rollout_map(mae_vit, x01 if imagenet_norm else torch.stack([normalize((t * 255).round().to(
        torch.uint8)) for t in x01])).numpy()
    assert not np.allclose(seen["rows"][0]["maps"][0], other[0], atol=1e-3)  # the input choice shows


# ---- low-label plot ----

def test_read_evaluate_results_and_series(world, tmp_path):
    records = plots.read_results(world["dir"] / "results.json")
    assert len(records) == 3 * 2 * 3
    series = plots.lowlabel_series([r for r in records if r["metric"] in ("auroc", "f1")])
    assert sorted(series) == [("nih", "probe", "auroc"), ("nih", "probe", "f1")]
    pacx = series[("nih", "probe", "auroc")]["pacx"]
    want = [(f, 0.62 + 0.1 * k, 0.57 + 0.1 * k, 0.67 + 0.1 * k) for k, f in enumerate((0.01, 0.1, 1.0))]
    assert np.allclose(np.array(pacx), np.array(want))  # the median and its percentiles, not the full-set value
    assert series[("nih", "probe", "f1")]["mae"][0] == (0.01, 0.3, None, None)  # no median: the value, no bar


def test_flat_records_and_errors(tmp_path, capsys):
    flat = [{"dataset": "tb", "backbone": "pacx", "fraction": f, "metric": "auroc", "value": v, "ci_low": v - .05,
             "ci_high": v + .05} for f, v in ((0.1, 0.8), (0.01, 0.7))]
    (tmp_path / "flat.json").write_text(json.dumps({"records": flat}))
    series = plots.lowlabel_series(plots.read_results(tmp_path / "flat.json"))
    assert list(series) == [("tb", "", "auroc")] and list(series[("tb", "", "auroc")]) == ["pacx"]
    assert np.allclose(series[("tb", "", "auroc")]["pacx"], [(0.01, 0.7, 0.65, 0.75), (0.1, 0.8, 0.75, 0.85)])
    (tmp_path / "bad.json").write_text(json.dumps([flat[0], {"backbone": "mae", "metric": "auroc", "value": 1}]))
    with pytest.raises(SystemExit):
        run(["--what", "lowlabel", "--results", tmp_path / "bad.json", "--out_dir", tmp_path])
    assert "bad.json: record 1 lacks fraction" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(["--what", "lowlabel", "--results", tmp_path / "flat.json", "--metrics", "dice", "--out_dir", tmp_path])
    assert "found: auroc" in capsys.readouterr().err


def test_lowlabel_figure(world, tmp_path):
    (path,) = run(["--what", "lowlabel", "--results", world["dir"] / "results.json", "--out_dir", tmp_path])
    assert png_size(path) == (1200, 800)
    (path,) = run(["--what", "lowlabel", "--results", world["dir"] / "results.json", "--metrics", "",
                   "--dpi", 50, "--out_dir", tmp_path])
    assert png_size(path) == (600, 400)
    assert plots.lowlabel_figure_size(7) == (3, 3, 12.0, 12.0)


# ---- training curves ----

def test_curves(world, tmp_path):
    records = [json.loads(x) for x in (world["dir"] / "run" / "metrics.jsonl").read_text().splitlines()]
    train, lr, val = plots.split_log(records)
    assert sorted(train) == ["loss"] and sorted(val) == ["val_ecg_top1", "val_loss"]
    assert train["loss"][2] == (3, 1.0 / 3) and lr["lr"][-1] == (8, 1e-4) and val["val_loss"] == [(4, 0.9), (8, 0.7)]
    (path,) = run(["--what", "curves", "--logs", f"{world['dir'] / 'run'},{world['dir'] / 'run' / 'metrics.jsonl'}",
                   "--out_dir", tmp_path])
    assert png_size(path) == (1200, 800)


def stage2_run(folder, batch: int, drop: float) -> None:
    """A train_distill.py-shaped run folder: InfoNCE falling by `drop` per log line, retrieval rising with it."""
    folder.mkdir(parents=True)
    lines = []
    for i in range(1, 5):
        lines.append({"step": 10 * i, "epoch": i, "contrastive_ecg": 4.1 - drop * i, "contrastive_labs": 4.1,
                      "total": 1.0, "lr": 1e-3})
        lines.append({"step": 10 * i, "epoch": i, "val_loss": 1.0, "val_contrastive_ecg": 4.1 - drop * i,
                      "val_ecg_top1": 0.02 + drop * i, "val_ecg_top5": 0.1, "val_labs_top1": 0.016})
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    (folder / "config.json").write_text(json.dumps({"script": {"batch_size": batch}}))


def test_stage2_figure_and_its_errors(tmp_path, capsys):
    stage2_run(tmp_path / "distill", 64, 0.1)
    stage2_run(tmp_path / "distill_shuffled", 64, 0.0)
    (path,) = run(["--what", "stage2", "--stage2", f"{tmp_path / 'distill'},{tmp_path / 'distill_shuffled'}",
                   "--out_dir", tmp_path / "fig"])
    assert path.name == "stage2.png" and png_size(path) == (1200, 800)
    stage2_run(tmp_path / "other_batch", 32, 0.1)
    (tmp_path / "mae").mkdir()
    (tmp_path / "mae" / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 0.5}) + "\n")
    (tmp_path / "mae" / "config.json").write_text(json.dumps({"script": {"batch_size": 64}}))
    for runs, message in (([tmp_path / "distill", tmp_path / "other_batch"], "different batch sizes"),
                          ([tmp_path / "mae"], "no Stage-2 InfoNCE terms")):
        with pytest.raises(SystemExit) as e:
            run(["--what", "stage2", "--stage2", ",".join(str(r) for r in runs), "--out_dir", tmp_path / "fig"])
        assert e.value.code == 2 and message in capsys.readouterr().err


# ---- the script ----

def test_all_help_and_bad_flags(world, tmp_path, capsys):
    d = world["dir"]
    written = run(["--mae", d / "last.pt", "--pacx", d / "encoder.pt", "--images", d / "imgs", "--num_images", 1,
                   "--results", d / "results.json", "--logs", d / "run", "--device", "cpu", "--out_dir", tmp_path])
    assert [p.name for p in written] == ["recon.png", "rollout.png", "lowlabel.png", "curves.png"]
    assert png_size(written[0]) == png_size(written[1]) == (1200, 300)
    with pytest.raises(SystemExit) as e:
        run(["--help"])
    assert e.value.code == 0
    help_text = capsys.readouterr().out
    assert all(f"--{name}" in help_text for name in visualize.Config.__dataclass_fields__)
    for args, message in ((["--what", "movie"], "--what: expected"), (["--what", "all"], "no inputs given"),
                          (["--what", "curves", "--logs", tmp_path / "nowhere"], "no metrics.jsonl there")):
        with pytest.raises(SystemExit) as e:
            run(args + ["--out_dir", tmp_path])
        assert e.value.code == 2 and message in capsys.readouterr().err
