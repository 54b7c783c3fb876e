"""Attention rollout (pacx/eval/rollout.py) against hand computations on 2-layer toys, and on a tiny ViT."""
import numpy as np
import pytest
import torch

from pacx.eval.rollout import attention_rollout, rollout_map, upsample_minmax
from pacx.models.vit import VisionTransformer, vit_tiny


def test_uniform_attention_closed_form():
    # Uniform attention J/T: each layer becomes M = (J/T + I) / 2, and M @ M = (3 J/T + I) / 4, so the CLS row
    # over the patches is 3 / (4 T) everywhere (T = 5 tokens: CLS + 2 x 2 patches).
    T = 5
    attn = torch.full((1, 3, T, T), 1.0 / T)
    out = attention_rollout([attn, attn])
    assert out.shape == (1, 2, 2)
    assert torch.allclose(out, torch.full((1, 2, 2), 3 / (4 * T)), atol=1e-6)


def normalised_layers(attns, b):
    """Per layer, by hand: mean over heads, + identity, rows divided by their sums."""
    layers = []
    for a in attns:
        m = a[b].double().numpy().mean(0) + np.eye(a.shape[-1])
        layers.append(m / m.sum(1, keepdims=True))
    return layers


def test_two_layer_product_by_hand():
    g = torch.Generator().manual_seed(0)
    attns = [torch.rand(2, 3, 5, 5, generator=g).softmax(-1) for _ in range(2)]
    got = attention_rollout(attns).double().numpy()
    first, second = zip(*(normalised_layers(attns, b) for b in range(2)))
    want = np.stack([(s @ f)[0, 1:].reshape(2, 2) for f, s in zip(first, second)])  # layer 2 acts on layer 1
    wrong = np.stack([(f @ s)[0, 1:].reshape(2, 2) for f, s in zip(first, second)])
    assert np.allclose(got, want, atol=1e-5)
    assert not np.allclose(got, wrong, atol=1e-5)  # the order matters, so the test can tell


def test_registers_are_left_out_of_the_map():
    g = torch.Generator().manual_seed(1)
    attns = [torch.rand(1, 2, 6, 6, generator=g).softmax(-1) for _ in range(2)]  # CLS, 1 register, 2 x 2 patches
    first, second = normalised_layers(attns, 0)
    want = (second @ first)[0, 2:].reshape(2, 2)  # the register (column 1) is not a patch
    assert np.allclose(attention_rollout(attns, num_prefix=2)[0].double().numpy(), want, atol=1e-5)
    with pytest.raises(ValueError, match="5 patch tokens"):
        attention_rollout(attns, num_prefix=1)


def test_upsample_minmax_and_tiny_vit():
    maps = torch.tensor([[[0.1, 0.3], [0.2, 0.5]]])
    up = upsample_minmax(maps, 8)
    assert up.shape == (1, 8, 8) and up.min().item() == 0.0 and up.max().item() == pytest.approx(1.0, abs=1e-5)
    assert up[0, 0, 0] == 0.0 and up[0, -1, -1] == pytest.approx(1.0, abs=1e-5)  # corners keep the extremes
    torch.manual_seed(0)
    vit = VisionTransformer(vit_tiny())
    x = torch.rand(2, 3, 64, 64)
    _, attns = vit.forward_features(x, return_attn=True)
    assert torch.allclose(rollout_map(vit, x), upsample_minmax(attention_rollout(attns), 64))
