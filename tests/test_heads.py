"""Stage-2 heads and objective (pacx/models/heads.py): the total against hand-combined parts (full and with one modality
off), weight ablations, the target-dropout quirk flag, retrieval metrics on a hand example, and checkpoint keys."""
import pytest
import torch
import torch.nn.functional as F

from pacx.models.heads import DistillHeads, HeadsConfig, heads_from_original_pacx, retrieval_metrics
from pacx.models.losses import info_nce

SMALL = dict(cxr_dim=12, ecg_dim=10, labs_dim=6, shared_dim=8)


def inputs(batch: int = 5):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(batch, SMALL["cxr_dim"], generator=g), torch.randn(batch, SMALL["ecg_dim"], generator=g),
            torch.randn(batch, SMALL["labs_dim"], generator=g))


def one_minus_cos(pred, target):
    return (1 - F.cosine_similarity(pred, target, dim=-1)).mean()


def test_full_loss_is_hand_combination():
    torch.manual_seed(0)
    heads = DistillHeads(HeadsConfig(**SMALL)).eval()
    x, e, lb = inputs()
    total, parts = heads(x, e, lb)
    scale = heads.temperature()
    c_ecg = info_nce(heads.cxr_to_shared(x), heads.ecg_to_shared(e), scale, 0.02)
    c_labs = info_nce(heads.cxr_to_shared(x), heads.labs_to_shared(lb), scale, 0.02)
    r_ecg = one_minus_cos(heads.cxr_to_ecg(x), e)
    r_labs = one_minus_cos(heads.cxr_to_labs(x), lb)
    expected = 0.5 * (c_ecg + c_labs) / 2 + 1.0 * (r_ecg + r_labs) / 2
    torch.testing.assert_close(total, expected)
    torch.testing.assert_close(parts["contrastive_labs"], c_labs.detach())
    torch.testing.assert_close(parts["regression_ecg"], r_ecg.detach())
    torch.testing.assert_close(parts["total"], 0.5 * parts["contrastive"] + parts["regression"])
    assert all(not v.requires_grad for v in parts.values())
    total.backward()
    assert heads.temperature.logit_scale.grad is not None and heads.cxr_to_labs.mlp[1].weight.grad is not None


def test_one_modality_off_equals_hand_parts():
    torch.manual_seed(0)
    full = DistillHeads(HeadsConfig(**SMALL)).eval()
    ecg_only = DistillHeads(HeadsConfig(**SMALL, use_labs=False)).eval()
    assert ecg_only.labs_to_shared is None and ecg_only.cxr_to_labs is None  # no unused parameters under DDP
    ecg_only.load_state_dict({k: v for k, v in full.state_dict().items() if "labs" not in k}, strict=True)
    x, e, lb = inputs()
    total, parts = ecg_only(x, e)
    _, full_parts = full(x, e, lb)
    torch.testing.assert_close(total, 0.5 * full_parts["contrastive_ecg"] + 1.0 * full_parts["regression_ecg"])
    assert "contrastive_labs" not in parts and "regression_labs" not in parts
    with pytest.raises(ValueError, match="no labs embedding"):
        DistillHeads(HeadsConfig(**SMALL, use_ecg=False))(x, e)


def test_weight_ablations():
    torch.manual_seed(0)
    x, e, lb = inputs()
    reg_only = DistillHeads(HeadsConfig(**SMALL, contrastive_weight=0.0)).eval()
    assert reg_only.cxr_to_shared is None and reg_only.temperature is None
    total, parts = reg_only(x, e, lb)
    expected = (one_minus_cos(reg_only.cxr_to_ecg(x), e) + one_minus_cos(reg_only.cxr_to_labs(x), lb)) / 2
    torch.testing.assert_close(total, expected)
    assert "contrastive" not in parts
    with pytest.raises(ValueError, match="not both 0"):
        DistillHeads(HeadsConfig(**SMALL, contrastive_weight=0.0, regression_weight=0.0))


def test_target_dropout_quirk_flag():
    x, e, lb = inputs(batch=64)
    quirk = DistillHeads(HeadsConfig(**SMALL)).train()
    clean = DistillHeads(HeadsConfig(**SMALL, target_dropout=False)).train()
    assert quirk.ecg_to_shared.mlp[0].p == 0.2 and clean.ecg_to_shared.mlp[0].p == 0.0
    assert clean.cxr_to_shared.mlp[0].p == 0.2  # the CXR side keeps its dropout either way
    torch.manual_seed(1)
    a = quirk.project(x, e, lb)["ecg_shared"]
    assert not torch.equal(a, quirk.project(x, e, lb)["ecg_shared"])  # dropout on the frozen target
    b = clean.project(x, e, lb)["labs_shared"]
    assert torch.equal(b, clean.project(x, e, lb)["labs_shared"])


def test_head_init():
    torch.manual_seed(0)
    heads = DistillHeads(HeadsConfig())  # full-size dims: cxr_to_ecg is 768 -> 1024
    lin = heads.cxr_to_ecg.mlp[1]
    assert tuple(lin.weight.shape) == (1024, 768) and torch.equal(lin.bias, torch.zeros(1024))
    assert abs(lin.weight.std().item() - 0.02) < 0.001
    assert heads.labs_to_shared.mlp[1].in_features == 256 and heads.ecg_to_shared.mlp[1].in_features == 1024


def test_retrieval_metrics_hand_example():
    a = torch.eye(4)
    b = a[[1, 0, 2, 3]] * 2.0  # rows 0 and 1 swapped: their best match is the wrong row
    m = retrieval_metrics(a, b)
    assert m["top1"].item() == 0.5
    assert m["top5"].item() == 1.0  # k = min(5, B) = 4 covers every row
    torch.testing.assert_close(m["pos_sim"], torch.tensor(0.5))
    torch.testing.assert_close(m["neg_sim"], torch.tensor(2.0 / 12))  # cos sum 4, minus the diagonal 2, over 4*3
    # No ties: b_j[k] = w[(j - k - 1) mod 8] with w = 8..1, so for query i the columns rank by (j - i - 1) mod 8
    # and the true match j = i comes last; cos(a_i, b_j) = w[...] / |w|.
    w = torch.arange(8, 0, -1, dtype=torch.float32)
    b8 = torch.stack([w[(j - torch.arange(8) - 1) % 8] for j in range(8)])
    m8 = retrieval_metrics(torch.eye(8), b8)
    assert m8["top1"].item() == 0.0 and m8["top5"].item() == 0.0
    torch.testing.assert_close(m8["pos_sim"], w[7] / w.norm())
    torch.testing.assert_close(m8["neg_sim"], w[:7].sum() / 7 / w.norm())
    top = retrieval_metrics(torch.eye(8), b8[[1, 2, 3, 4, 5, 6, 7, 0]])  # column i+1 (query i's best) moved to i
    assert top["top1"].item() == 1.0


def test_heads_from_original_pacx():
    src = DistillHeads(HeadsConfig(**SMALL))
    ckpt = {("loss_module.logit_scale" if k == "temperature.logit_scale" else k): v + 1
            for k, v in src.state_dict().items()}
    ckpt["cxr_encoder.base_model.model.norm.weight"] = torch.ones(3)  # encoder keys are not the heads' business
    dst = DistillHeads(HeadsConfig(**SMALL))
    dst.load_state_dict(heads_from_original_pacx(ckpt), strict=True)
    torch.testing.assert_close(dst.temperature.logit_scale, src.temperature.logit_scale + 1)
    assert "cxr_to_shared.mlp.1.weight" in ckpt
