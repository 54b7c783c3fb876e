"""Tests for pacx/models/ecg.py: ECGFounder's Net1D against its reference structure, hand computations and
checkpoint I/O."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from pacx.errors import PacxError
from pacx.data.targets import frozen_ecg_encoder
from pacx.models.ecg import BasicBlock, ConvPadSame, Net1D, Net1DConfig, ecg_embed_dim
from pacx.weights import load_ecg_encoder

# Counted by instantiating PKUDigitalHealth/ECGFounder net1d.py `Net1D(12, 64, 1, [64,160,160,400,400,1024,1024],
# [2,2,2,3,3,4,4], 16, 2, 16, n_classes=150, use_bn=False, use_do=False)`: every parameter, BN and dense included.
REFERENCE_PARAMS = 30_819_014


def reference_layout(n_classes: int = 150) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the reference checkpoint, written out from the structure of ECGFounder's net1d.py."""
    filters, blocks, k, groups_width = (64, 160, 160, 400, 400, 1024, 1024), (2, 2, 2, 3, 3, 4, 4), 16, 16
    layout = {}

    def conv(name, c_in, c_out, kernel, groups=1):
        layout[f"{name}.conv.weight"] = (c_out, c_in // groups, kernel)
        layout[f"{name}.conv.bias"] = (c_out,)

    def bn(name, c):
        for p in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{name}.{p}"] = (c,)
        layout[f"{name}.num_batches_tracked"] = ()

    conv("first_conv", 12, 64, k)
    bn("first_bn", 64)
    c_in = 64
    for s, (c_out, m) in enumerate(zip(filters, blocks)):
        for b in range(m):
            pre = f"stage_list.{s}.block_list.{b}"
            block_in = c_in if b == 0 else c_out
            bn(f"{pre}.bn1", block_in)
            conv(f"{pre}.conv1", block_in, c_out, 1)
            bn(f"{pre}.bn2", c_out)
            conv(f"{pre}.conv2", c_out, c_out, k, groups=c_out // groups_width)
            bn(f"{pre}.bn3", c_out)
            conv(f"{pre}.conv3", c_out, c_out, 1)
            layout.update({f"{pre}.se_fc1.weight": (c_out // 2, c_out), f"{pre}.se_fc1.bias": (c_out // 2,),
                           f"{pre}.se_fc2.weight": (c_out, c_out // 2), f"{pre}.se_fc2.bias": (c_out,)})
        c_in = c_out
    if n_classes:
        layout.update({"dense.weight": (n_classes, 1024), "dense.bias": (n_classes,)})
    return layout


@pytest.fixture(scope="module")
def source_net() -> Net1D:
    torch.manual_seed(0)
    return Net1D(Net1DConfig()).eval()


def test_state_dict_matches_reference_layout_and_param_count(source_net):
    layout = reference_layout()
    got = {k: tuple(v.shape) for k, v in source_net.state_dict().items()}
    assert got == layout
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    n_params = sum(math.prod(s) for k, s in layout.items() if not k.endswith(buffers))
    assert n_params == REFERENCE_PARAMS
    assert sum(p.numel() for p in source_net.parameters()) == REFERENCE_PARAMS


def test_forward_shapes_and_feature_is_time_mean(source_net):
    torch.manual_seed(1)
    x = torch.randn(1, 12, 5000)
    with torch.no_grad():
        feature_map = source_net.forward_map(x)
        assert feature_map.shape == (1, ecg_embed_dim, 20)  # 5000 -> 2500 (stem) -> 1250 ... -> 20
        feats = source_net.forward_features(x)
        torch.testing.assert_close(feats, feature_map.mean(-1))
        logits = source_net(x)
    torch.testing.assert_close(logits, feats @ source_net.dense.weight.T + source_net.dense.bias)


def test_checkpoint_round_trip_gives_identical_features(source_net, tmp_path):
    state_dict = source_net.state_dict()  # checkpoint layout: bn.* and dense.* included
    wrapped, bare_ddp = tmp_path / "12_lead_ECGFounder.pth", tmp_path / "bare.pth"
    torch.save({"state_dict": state_dict, "epoch": 3}, wrapped)
    torch.save({f"module.{k}": v for k, v in state_dict.items()}, bare_ddp)

    torch.manual_seed(2)
    x = torch.randn(2, 12, 1000)  # short input keeps the full network fast on CPU
    with torch.no_grad():
        expected = source_net.forward_features(x)
    for path in (wrapped, bare_ddp):
        encoder = load_ecg_encoder(path)
        assert torch.equal(encoder(x), expected)
        assert encoder.dense is None and not any(p.requires_grad for p in encoder.parameters())
        encoder.train()
        assert not encoder.training  # frozen stays in eval


def test_checkpoint_with_wrong_keys_or_shapes_is_refused(source_net, tmp_path):
    bad_keys = tmp_path / "bad_keys.pth"
    state_dict = dict(source_net.state_dict())
    renamed = "stage_list.0.block_list.0.conv1.conv.weight"
    state_dict[renamed.replace("conv1", "conv9")] = state_dict.pop(renamed)
    torch.save({"state_dict": state_dict}, bad_keys)
    with pytest.raises(PacxError, match=r"1 missing keys \['stage_list.0.block_list.0.conv1.conv.weight'\].*conv9"):
        load_ecg_encoder(bad_keys)

    one_lead = tmp_path / "one_lead.pth"
    state_dict = dict(source_net.state_dict())
    state_dict["first_conv.conv.weight"] = torch.zeros(64, 1, 16)  # the 1-lead ECGFounder stem
    torch.save({"state_dict": state_dict}, one_lead)
    with pytest.raises(PacxError, match=r"first_conv.conv.weight has shape \(64, 1, 16\), expected \(64, 12, 16\)"):
        load_ecg_encoder(one_lead)

    with pytest.raises(PacxError, match="nowhere.pth"):
        load_ecg_encoder(tmp_path / "nowhere.pth")


def test_random_weights_warn_loudly():
    with pytest.warns(UserWarning, match="RANDOM WEIGHTS.*MEANINGLESS"):
        encoder = frozen_ecg_encoder(None)
    assert encoder(torch.randn(1, 12, 600)).shape == (1, ecg_embed_dim)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [1, 5, 16])
@pytest.mark.parametrize("length", [1, 15, 16, 17, 625, 5000])
def test_same_padding_matches_formula(length, kernel, stride):
    torch.manual_seed(3)
    layer = ConvPadSame(3, 4, kernel, stride)
    x = torch.randn(2, 3, length)
    # METHOD.md: p = max(0, (ceil(L/s) - 1) * s + k - L), left p // 2, right the rest
    p = max(0, (math.ceil(length / stride) - 1) * stride + kernel - length)
    expected = F.conv1d(F.pad(x, (p // 2, p - p // 2)), layer.conv.weight, layer.conv.bias, stride=stride)
    out = layer(x)
    assert out.shape[-1] == math.ceil(length / stride)
    torch.testing.assert_close(out, expected)
    if stride == 1:  # PyTorch's own 'same' padding (extra sample on the right) is a second, independent oracle
        torch_same = torch.nn.Conv1d(3, 4, kernel, padding="same")
        torch_same.load_state_dict(layer.conv.state_dict())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # even-kernel 'same' notice
            torch.testing.assert_close(out, torch_same(x))


def swish(x):
    return x / (1 + torch.exp(-x))


def hand_block(block: BasicBlock, x: torch.Tensor, kernel: int, stride: int, groups: int) -> torch.Tensor:
    """One block written out with unfold, explicit group sums and explicit pairwise max; no conv/pool calls."""
    w1, b1 = block.conv1.conv.weight[:, :, 0], block.conv1.conv.bias
    w2, b2 = block.conv2.conv.weight, block.conv2.conv.bias
    w3, b3 = block.conv3.conv.weight[:, :, 0], block.conv3.conv.bias
    h = x if block.is_first_block else swish(x)
    h = swish(torch.einsum("oc,bcl->bol", w1, h) + b1[:, None])
    length = h.shape[-1]
    out_length = -(-length // stride)
    p = max(0, (out_length - 1) * stride + kernel - length)
    windows = F.pad(h, (p // 2, p - p // 2)).unfold(-1, kernel, stride)  # (B, C, L', k)
    c_out, c_per_group = w2.shape[0], w2.shape[1]
    o_per_group = c_out // groups
    group_inputs = [windows[:, g * c_per_group:(g + 1) * c_per_group] for g in range(groups)]  # (B, C/G, L', k)
    h = torch.stack(
        [torch.einsum("cj,bclj->bl", w2[o], group_inputs[o // o_per_group]) + b2[o] for o in range(c_out)], dim=1
    )
    h = torch.einsum("oc,bcl->bol", w3, swish(h)) + b3[:, None]
    z = h.mean(-1)
    squeezed = swish(z @ block.se_fc1.weight.T + block.se_fc1.bias)
    gate = 1 / (1 + torch.exp(-(squeezed @ block.se_fc2.weight.T + block.se_fc2.bias)))
    h = h * gate[:, :, None]
    # shortcut: pairs (x0, x1), (x2, x3), ...; an odd last sample meets the padded zero
    identity = x
    if stride == 2:
        padded = torch.cat([x, torch.zeros_like(x[..., :1])], -1) if length % 2 else x
        identity = torch.maximum(padded[..., 0::2], padded[..., 1::2])
    grow = h.shape[1] - x.shape[1]
    zeros = torch.zeros(x.shape[0], 1, identity.shape[-1])
    identity = torch.cat([zeros.expand(-1, grow // 2, -1), identity, zeros.expand(-1, grow - grow // 2, -1)], 1)
    return h + identity


@pytest.mark.parametrize("is_first_block", [True, False])
@pytest.mark.parametrize("stride,c_in,length", [(2, 4, 7), (2, 3, 8), (1, 8, 9)])
def test_block_matches_hand_computation(is_first_block, stride, c_in, length):
    torch.manual_seed(4)
    cfg = Net1DConfig(kernel_size=3, groups_width=4)
    block = BasicBlock(c_in, 8, cfg, stride=stride, is_first_block=is_first_block)
    x = torch.randn(2, c_in, length) - 1.0  # mostly negative: the padded zero wins the last odd max-pool window
    torch.testing.assert_close(block(x), hand_block(block, x, kernel=3, stride=stride, groups=2))


def test_batchnorm_modules_exist_but_are_not_run_without_use_bn():
    torch.manual_seed(5)
    small = dict(base_filters=8, filter_list=(8, 16), m_blocks_list=(2, 1), kernel_size=5, groups_width=4, n_classes=0)
    x = torch.randn(2, 12, 64)
    for use_bn in (False, True):
        net = Net1D(Net1DConfig(**small, use_bn=use_bn)).eval()
        before = net.forward_features(x)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.fill_(3.0)
        changed = not torch.allclose(before, net.forward_features(x))
        assert changed == use_bn
