"""pacx/optim.py, the one optimizer vocabulary of every stage: the decay rule against the references' rules, group lr
scales, the warmup + cosine schedule against its formula, and the fused AdamW against torch's reference loop."""
import math

import pytest
import torch

from pacx.eval.finetune import prepare_finetune
from pacx.models.mae import MaskedAutoencoder, mae_tiny
from pacx.models.vit import VisionTransformer, vit_tiny
from pacx.optim import lr_factor, make_adamw, param_groups, set_lr


def no_decay_names(model, groups):
    ids = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


@pytest.mark.parametrize("mode", ["finetune", "lora"])
def test_decay_rule_equals_the_reference_stage3_rule(mode):
    """Stage 3 of the reference (`cl_lit.py`) skips decay when p.ndim < 2 or the name holds "bias" or "norm"; the one
    pacx rule (1-D or a name ending ".bias") picks the same parameters of a fine-tuned / LoRA classifier."""
    model = prepare_finetune(VisionTransformer(vit_tiny(num_registers=2)), 3, mode)
    groups = param_groups(model, 0.01)
    reference = {n for n, p in model.named_parameters() if p.requires_grad and (p.ndim < 2 or "bias" in n
                                                                                   or "norm" in n)}
    assert no_decay_names(model, groups) == reference and reference


def test_decay_rule_equals_the_official_mae_rule():
    """Official MAE (`param_groups_weight_decay` / timm `add_weight_decay`): no decay on 1-D parameters and biases."""
    mae = MaskedAutoencoder(mae_tiny())
    want = {n for n, p in mae.named_parameters() if p.requires_grad and (p.ndim <= 1 or n.endswith(".bias"))}
    assert no_decay_names(mae, param_groups(mae, 0.05)) == want
    assert no_decay_names(mae, param_groups(mae, 0.05, decay_all=True)) == set()


def test_group_lr_scale_and_schedule():
    backbone, head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)
    opt = make_adamw(param_groups(backbone, 0.0, lr_scale=0.1) + param_groups(head, 0.0), lr=3e-4)
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([3e-5, 3e-5, 3e-4, 3e-4])
    set_lr(opt, 1e-3)
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([1e-4, 1e-4, 1e-3, 1e-3])
    # per epoch (the reference's LambdaLR stepped per epoch): (e + 1) / warmup, then a half cosine to `floor`
    assert [lr_factor(e, 5, 50) for e in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert lr_factor(5, 5, 50) == 1.0 and lr_factor(50, 5, 50) == 0.0
    assert lr_factor(27.5, 5, 50) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert 0.5 * (1 + math.cos(math.pi * 44 / 45)) < 0.01 == lr_factor(49, 5, 50, floor=0.01)
    assert lr_factor(2.5, 5, 50, per_step=True) == 0.5  # per step: t / warmup on a fractional epoch


def test_fused_adamw_equals_the_reference_loop():
    """The fused kernel every stage uses against torch's for-loop AdamW, float64, 5 steps with weight decay."""
    torch.manual_seed(0)
    a = torch.nn.Linear(8, 3).double()
    b = torch.nn.Linear(8, 3).double()
    b.load_state_dict(a.state_dict())
    fused = make_adamw(param_groups(a, 0.05), lr=1e-2, betas=(0.9, 0.95))
    loop = torch.optim.AdamW(param_groups(b, 0.05), lr=1e-2, betas=(0.9, 0.95), foreach=False)
    for step in range(5):
        x = torch.randn(16, 8, dtype=torch.float64)
        for model, opt in ((a, fused), (b, loop)):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-12, rtol=1e-12)
