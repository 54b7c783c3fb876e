"""Stage-3 training loops (pacx/eval/probe.py) and evaluate.py end to end.

The linear probe leaves every backbone parameter untouched while full fine-tuning changes them (values and
gradients) and LoRA changes only the adapters; model selection returns the best validation epoch; evaluate.py runs
two tiny backbones (random init and a saved checkpoint) through classification, segmentation, alignment and rollout
on generated PNGs and writes results.json / results.md that parse."""
import json
from dataclasses import asdict
from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import evaluate
from pacx.eval.finetune import finetune, prepare_finetune
from pacx.models.lora import LoRALinear
from pacx.eval.metrics import macro_auroc
from pacx.eval.probe import ProbeConfig, extract_features, to_probabilities, train_linear_probe
from pacx.models.vit import VisionTransformer, vit_tiny
from pacx.weights import load_vit

DEV = torch.device("cpu")


def toy_images(n, seed):
    """(n, 3, 32, 32) images; label 1 = a bright square in the upper half."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g) * 0.3
    y = (torch.arange(n) % 2).float()
    x[y == 1, :, 4:14, 8:24] += 2.0
    return x, y[:, None]


def tiny_backbone():
    torch.manual_seed(0)
    return VisionTransformer(vit_tiny(img_size=32))


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_linear_probe_leaves_backbone_unchanged_and_selects_best_epoch():
    backbone = tiny_backbone()
    before = snapshot(backbone)
    (x, y), (xv, yv) = toy_images(32, 0), toy_images(16, 1)
    f_train = extract_features(backbone, [(x[i:i + 8],) for i in range(0, 32, 8)], DEV)
    f_val = extract_features(backbone, [(xv,)], DEV)
    assert torch.allclose(f_train[:8], backbone(x[:8]), atol=1e-6)  # the CLS feature, in eval mode
    head, info = train_linear_probe(f_train, y.numpy(), f_val, yv.numpy(), "binary",
                                    ProbeConfig(epochs=12, lr=3e-2, batch_size=8))
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in backbone.parameters())
    vals = [h["val_auroc"] for h in info["history"]]
    assert info["best_epoch"] == int(np.argmax(vals)) and info["best_val_auroc"] == max(vals)
    p_val = to_probabilities(head(f_val), "binary")
    assert macro_auroc(yv.numpy(), p_val, "binary") == pytest.approx(info["best_val_auroc"])  # the best head
    assert info["best_val_auroc"] > 0.9


@pytest.mark.parametrize("mode", ["finetune", "lora"])
def test_finetune_changes_backbone(mode):
    backbone = tiny_backbone()
    before = snapshot(backbone)
    model = prepare_finetune(backbone, 1, mode)
    (x, y), (xv, yv) = toy_images(16, 0), toy_images(8, 1)
    batches = [(x[:8], y[:8]), (x[8:], y[8:])]
    model, info = finetune(model, lambda epoch, start: batches[start:], [(xv, yv)], yv.numpy(), "binary",
                           ProbeConfig(epochs=2, lr=1e-2, backbone_lr_scale=1.0), DEV)
    params = dict(model.backbone.named_parameters())
    if mode == "finetune":
        for name, p in params.items():
            if name == "pos_embed":  # the fixed sin-cos table is not trained
                assert not p.requires_grad and torch.equal(p, before[name])
                continue
            assert p.grad is not None and p.grad.abs().sum() > 0, name
            assert not torch.equal(p.detach(), before[name]), name
    else:
        adapters = [m for m in model.backbone.modules() if isinstance(m, LoRALinear)]
        assert len(adapters) == 3 * 4
        assert all(m.lora_B.abs().sum() > 0 and m.lora_B.grad is not None for m in adapters)  # B starts at 0
        for name, p in params.items():
            base_name = name.replace(".base_layer", "")
            if "lora_" not in name and not name.startswith("norm."):
                assert p.grad is None and torch.equal(p.detach(), before[base_name]), name
    assert info["best_epoch"] in (0, 1)


def write_png_data(root, n=30, disc=220):
    """Gray 32 px PNGs (background 20-59): label 1 = a disc of gray level `disc`; the disc is also the segmentation
    mask."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    rows = []
    for i in range(n):
        label = i % 2
        img = rng.integers(20, 60, (32, 32))
        mask = np.zeros((32, 32), np.uint8)
        if label:
            cy, cx = rng.integers(10, 22, 2)
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < 49
            img[inside] = disc
            mask[inside] = 255
        Image.fromarray(img.astype(np.uint8)).save(root / f"img{i:02d}.png")
        Image.fromarray(mask).save(root / f"mask{i:02d}.png")
        split = "train" if i < 16 else "val" if i < 23 else "test"
        rows.append((f"img{i:02d}.png", f"mask{i:02d}.png", label, split))
    (root / "task.csv").write_text("Path,finding,split\n" + "".join(f"{a},{c},{d}\n" for a, _, c, d in rows))
    (root / "seg.csv").write_text("img_path,mask_path,split\n" + "".join(f"{a},{b},{d}\n" for a, b, _, d in rows))
    ecg = rng.normal(size=(n, 12))
    np.savez(root / "targets.npz", ecg=ecg, labs=ecg[:, :6] + 0.1 * rng.normal(size=(n, 6)))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    write_png_data(root)
    torch.manual_seed(1)
    saved = VisionTransformer(vit_tiny())
    torch.save({"model": saved.state_dict(), "config": {"kind": "vit", **asdict(vit_tiny())}}, root / "vit.pt")
    return root


COMMON = ["--model", "tiny", "--img_size", "32", "--device", "cpu", "--workers", "0", "--batch_size", "8",
          "--bootstrap", "30"]


def test_end_to_end_probe_segmentation_alignment_rollout(data, tmp_path):
    out = tmp_path / "run"
    evaluate.main([
        "--backbones", f"random=,saved={data / 'vit.pt'}", "--reference", "random",
        "--task_csv", str(data / "task.csv"), "--label_columns", "finding", "--task_type", "binary",
        "--fractions", "0.5,1.0", "--probe_epochs", "3", "--seg_csv", str(data / "seg.csv"), "--seg_epochs", "2",
        "--seg_batch_size", "8", "--align_features", str(data / "targets.npz"), "--rollout", "2",
        "--out_dir", str(out), *COMMON])
    res = json.loads((out / "results.json").read_text())
    assert set(res["backbones"]) == {"random", "saved"}
    fr = res["classification"]["fractions"]
    assert set(fr) == {"0.5", "1"} and fr["0.5"]["n_train"] == 8 and fr["1"]["n_train"] == 16
    for frac in fr.values():
        for name in ("random", "saved"):
            auroc = frac["backbones"][name]["test"]["auroc"]
            assert auroc["lo"] <= auroc["median"] <= auroc["hi"] and auroc["n_resamples"] > 0
            assert set(frac["backbones"][name]["test"]) == {"auroc", "accuracy", "precision", "recall", "f1",
                                                            "f1_tuned"}
        assert set(frac["delta"]) == {"saved"}  # saved - random
    seg = res["segmentation"]
    assert seg["n_test"] == 7 and 0 <= seg["backbones"]["saved"]["test"]["dice"]["value"] <= 1
    assert set(res["alignment"]) == {"ecg", "labs"}
    assert {"r2", "cosine", "cosine_centered", "R@1", "R@5", "R@10"} <= set(res["alignment"]["ecg"]["backbones"]
                                                                            ["saved"])
    assert len(res["rollout"]["files"]) == 2
    tile = np.asarray(Image.open(res["rollout"]["files"][0]))
    assert tile.shape == (32, 4 * 32 + 3 * 4, 3)  # image, random, saved, saved - random
    md = (out / "results.md").read_text()
    assert "| train labels | metric | random | saved | saved − random |" in md
    table = [line for line in md.splitlines() if line.startswith("| 100% (n=16) | AUROC |")]
    assert len(table) == 1 and len(table[0].split("|")) == 2 + 2 + 2 + 1


def test_end_to_end_finetune(data, tmp_path):
    out = tmp_path / "ft"
    evaluate.main(["--backbones", f"a={data / 'vit.pt'},b=", "--task_csv", str(data / "task.csv"),
                   "--label_columns", "finding", "--task_type", "binary", "--mode", "finetune", "--fractions", "1",
                   "--finetune_epochs", "1", "--out_dir", str(out), *COMMON])
    res = json.loads((out / "results.json").read_text())
    assert res["reference"] == "a" and set(res["classification"]["fractions"]["1"]["delta"]) == {"b"}


def test_help_and_bad_input(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert all(f"--{flag}" in text for flag in ("backbones", "reference", "fractions", "seg_csv", "bootstrap"))
    bad = tmp_path / "bad.csv"
    bad.write_text("Path,finding,split\nimg00.png,0,training\n")
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--task_csv", str(bad), "--label_columns", "finding", "--out_dir", str(tmp_path), *COMMON])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "bad.csv: line 2, column 'split': expected train, val or test, found 'training'" in err


def test_probe_norm_fixes_badly_conditioned_features():
    """Features with a large shared offset and a small informative direction (as a briefly trained CLS token has):
    the reference's plain Linear probe barely moves in 30 epochs; standardising first (--probe_norm, the MAE
    paper's BatchNorm without affine) finds the signal."""
    from pacx.eval.probe import ProbeConfig, standardize, train_linear_probe

    g = torch.Generator().manual_seed(0)
    y = (torch.rand(400, generator=g) < 0.5).float()
    x = 50.0 + 0.05 * torch.randn(400, 16, generator=g)  # a large shared offset, small spread
    x[:, 0] = 50.0 + 0.02 * (2 * y - 1) + 0.01 * torch.randn(400, generator=g)  # the informative feature
    cfg = ProbeConfig(flip=False, batch_size=32)  # 10 steps an epoch
    labels = y[:, None].numpy()
    plain = train_linear_probe(x[:300], labels[:300], x[300:], labels[300:], "binary", cfg)[1]["best_val_auroc"]
    xs = standardize({"train": x[:300], "val": x[300:]}, x[:300])
    # float32 rounding of values near 50 is ~4e-6, i.e. ~4e-4 of a 0.01 std: the statistics hold to 1e-3
    assert torch.allclose(xs["train"].mean(0), torch.zeros(16), atol=1e-3)
    assert torch.allclose(xs["train"].std(0), torch.ones(16), atol=1e-3)
    normed = train_linear_probe(xs["train"], labels[:300], xs["val"], labels[300:], "binary", cfg)[1]["best_val_auroc"]
    assert normed > 0.9 and plain < normed - 0.2, (plain, normed)


def test_end_to_end_probe_norm_is_the_probe_on_standardised_training_statistics(data, tmp_path):
    """evaluate.py --probe_norm gives the test AUROC of a probe trained, here, on features standardised by the
    training split's mean / std (and not by validation or test statistics)."""
    from pacx.eval.splits import read_splits
    from pacx.eval.probe import ProbeConfig, image_label_sample, row_loader, standardize, to_probabilities

    evaluate.main(["--backbones", f"saved={data / 'vit.pt'}", "--task_csv", str(data / "task.csv"),
                   "--label_columns", "finding", "--task_type", "binary", "--fractions", "1", "--probe_epochs", "3",
                   "--probe_flip", "false", "--probe_norm", "--seed", "7", "--out_dir", str(tmp_path / "norm"),
                   *COMMON])
    got = json.loads((tmp_path / "norm" / "results.json").read_text())["classification"]["fractions"]["1"]
    got = got["backbones"]["saved"]["test"]["auroc"]["value"]

    backbone = load_vit(str(data / "vit.pt"), img_size=32)  # as evaluate.py builds it (pacx/weights.py, tested)
    ds = evaluate.ImageCSV(data / "task.csv", "Path", ["finding"], None, "binary")
    splits = read_splits((str(data / "task.csv"),), "split", "Path")
    feats = {s: extract_features(backbone, row_loader(ds, partial(image_label_sample, size=32), info["rows"], 8),
                                 DEV) for s, info in splits.items()}
    y = {s: ds.labels[info["rows"]] for s, info in splits.items()}
    xs = standardize(feats, feats["train"])
    head, _ = train_linear_probe(xs["train"], y["train"], xs["val"], y["val"], "binary",
                                 ProbeConfig(epochs=3, lr=3e-3, batch_size=8, flip=False, seed=7))
    with torch.no_grad():
        want = macro_auroc(y["test"], to_probabilities(head(xs["test"]), "binary"), "binary")
    assert got == pytest.approx(want, abs=1e-12)


def test_logistic_probe_converges_where_the_reference_probe_does_not():
    """The converged probe finds the signal in badly conditioned features (the reference AdamW probe's weak spot at
    few steps), picks its L2 strength by validation AUROC (checked: no other C of the grid does better on
    validation), and a label with one class in the training subset predicts that class's frequency."""
    from pacx.eval.probe import LOGREG_C, logistic_probe

    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.4).astype(float)
    x = 50.0 + 0.05 * rng.normal(size=(300, 8))
    x[:, 0] = 50.0 + 0.02 * (2 * y - 1) + 0.01 * rng.normal(size=300)
    y2 = np.stack([y, np.zeros(300)], axis=1)  # the second label never occurs
    p_val, p_test, info = logistic_probe(x[:100], y2[:100], x[100:200], y2[100:200], x[200:], "multilabel")
    assert macro_auroc(y2[200:], p_test, "multilabel") > 0.95 and np.all(p_test[:, 1] == 0.0)
    aurocs = []
    for C in LOGREG_C:
        from sklearn.linear_model import LogisticRegression

        mu, sd = x[:100].mean(0), x[:100].std(0)
        m = LogisticRegression(C=C, max_iter=5000).fit((x[:100] - mu) / sd, y[:100])
        aurocs.append(macro_auroc(y[100:200, None], m.predict_proba((x[100:200] - mu) / sd)[:, 1:], "binary"))
    assert info["best_val_auroc"] == pytest.approx(max(aurocs), abs=1e-9)
    assert info["C"] == LOGREG_C[int(np.argmax(aurocs))]


def test_end_to_end_logreg_column(data, tmp_path):
    evaluate.main(["--backbones", f"saved={data / 'vit.pt'}", "--task_csv", str(data / "task.csv"),
                   "--label_columns", "finding", "--task_type", "binary", "--fractions", "1", "--probe_epochs", "2",
                   "--logreg", "--out_dir", str(tmp_path / "lr"), *COMMON])
    res = json.loads((tmp_path / "lr" / "results.json").read_text())
    assert res["classification_logreg"]["mode"] == "converged logistic-regression probe"
    assert 0 <= res["classification_logreg"]["fractions"]["1"]["backbones"]["saved"]["test"]["auroc"]["value"] <= 1
    assert "## Classification: task (binary, converged logistic-regression probe)" in \
        (tmp_path / "lr" / "results.md").read_text()


def test_random_backbone_takes_the_architecture_of_the_others(data, tmp_path, capsys):
    """Without --model / --img_size a random init used to be a ViT-B at 224 px next to a tiny 64 px checkpoint; it now
    is the checkpoint's architecture (the config the fixture wrote), and others of different sizes are refused."""
    common = ["--task_csv", str(data / "task.csv"), "--label_columns", "finding", "--task_type", "binary",
              "--fractions", "1", "--probe_epochs", "1", "--device", "cpu", "--workers", "0", "--batch_size", "8",
              "--bootstrap", "10"]
    evaluate.main(["--backbones", f"random=,saved={data / 'vit.pt'}", *common, "--out_dir", str(tmp_path / "a")])
    info = json.loads((tmp_path / "a" / "results.json").read_text())["backbones"]
    assert info["random"]["config"] == asdict(vit_tiny()) == info["saved"]["config"]
    assert info["random"]["parameters"] == info["saved"]["parameters"]
    assert "random init: the architecture of saved (64 px, patch 8, width 64, depth 4, 4 heads)" in \
        capsys.readouterr().out

    torch.save({"model": VisionTransformer(vit_tiny(embed_dim=32, num_heads=2)).state_dict(),
                "config": {"kind": "vit", **asdict(vit_tiny(embed_dim=32, num_heads=2))}}, tmp_path / "narrow.pt")
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--backbones", f"random=,saved={data / 'vit.pt'},narrow={tmp_path / 'narrow.pt'}", *common,
                       "--out_dir", str(tmp_path / "b")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a random-init backbone (empty path) takes the architecture of the others, but they " \
                             "differ (saved: 64 px, patch 8, width 64, depth 4, 4 heads; narrow: 64 px, patch 8, " \
                             "width 32, depth 4, 2 heads)" in err[0]


def test_low_label_cells_hold_both_classes_or_are_not_computable(data, tmp_path, capsys):
    """1% of 16 training rows is int(0.16) = 0 rows: the subset is a positive and a negative (2 rows), scored. A label
    positive in every training row has no negative at any fraction: not computable, in results.json and results.md.
    A label without a positive in validation leaves the model-selection AUROC, and says so."""
    df = pd.read_csv(data / "task.csv")
    df["always"] = (df["split"] == "train").astype(int) | df["finding"]  # 1 on every training row
    df.loc[df["split"] == "val", "finding"] = 0  # no positive in validation
    df.to_csv(data / "task_lowlabel.csv", index=False)
    common = ["--task_csv", str(data / "task_lowlabel.csv"), "--probe_epochs", "2", "--fractions", "0.01,1",
              "--out_dir", str(tmp_path / "run"), *COMMON]
    evaluate.main(["--backbones", f"saved={data / 'vit.pt'}", "--label_columns", "finding", "--task_type", "binary",
                   *common])
    out = capsys.readouterr().out
    assert "fraction 0.01: int(16 x 0.01) = 0 training row(s), 2 with the rows" in out
    assert "warning: validation AUROC (model selection) skips ['finding']: one class only in the val split" in out
    res = json.loads((tmp_path / "run" / "results.json").read_text())["classification"]
    assert res["fractions"]["0.01"]["n_train"] == 2 and res["not_computable"] == {}
    assert res["auroc_skipped_val_columns"] == ["finding"]
    assert "Validation AUROC (the model selection) leaves out finding" in (tmp_path / "run" / "results.md").read_text()

    evaluate.main(["--backbones", f"saved={data / 'vit.pt'}", "--label_columns", "finding,always", "--task_type",
                   "multilabel", "--overwrite", *common])
    res = json.loads((tmp_path / "run" / "results.json").read_text())["classification"]
    assert res["fractions"] == {}
    reason = "the {} training rows hold no negative of 'always'"
    assert res["not_computable"] == {"0.01": {"n_train": 2, "reason": reason.format(2)},
                                     "1": {"n_train": 16, "reason": reason.format(16)}}
    md = (tmp_path / "run" / "results.md").read_text()
    assert "| 1% (n=2) | not computable | n/a |" in md
    assert f"100% of the training labels (n=16) is not computable: {reason.format(16)}." in md
