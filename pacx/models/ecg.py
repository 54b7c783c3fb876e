"""ECGFounder's Net1D, the frozen ECG encoder that gives PaCX-MAE its 1024-d ECG targets, written by hand.

Implements METHOD.md "Stage 1c". Follows PKUDigitalHealth/ECGFounder `net1d.py` (Hong et al., a 1-D RegNet-style CNN)
for the structure and for every module name, so the released `12_lead_ECGFounder.pth` loads with strict key
matching once its `dense.*` head is dropped, as the reference's `ft_12lead_ECGFounder` and PACX-MAE's
`ecg_features_extraction.ipynb` do. BatchNorm modules exist (the checkpoint has their keys) but the released model
runs with `use_bn=False`, so they are never applied.

Input: (B, 12, 5000) = 10 s at 500 Hz, leads I, II, III, aVR, aVL, aVF, V1-V6, preprocessed by
`pacx.data.ecg_io.ecgfounder_preprocess`. Output of `ECGEncoder`: (B, 1024), the time-mean of the last stage.

Notation: B = batch, C = channels, L = time samples.
"""
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

ecg_embed_dim = 1024  # width of the last stage of the released ECGFounder = its ECG target dimension in Stage 2


@dataclass
class Net1DConfig:
    in_channels: int = 12
    base_filters: int = 64
    ratio: float = 1.0  # width of a block's inner convs relative to its output width
    filter_list: tuple[int, ...] = (64, 160, 160, 400, 400, 1024, 1024)
    m_blocks_list: tuple[int, ...] = (2, 2, 2, 3, 3, 4, 4)
    kernel_size: int = 16
    stride: int = 2  # stride of the first block of every stage
    groups_width: int = 16  # channels per group of the k=16 conv: groups = out_channels // groups_width
    use_bn: bool = False
    use_do: bool = False
    n_classes: int = 150  # the released checkpoint's 150-label head; 0 builds no `dense` head


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class ConvPadSame(nn.Module):
    """Conv1d with TensorFlow-style SAME padding: output length ceil(L / stride) (reference `MyConv1dPadSame`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length, k, s = x.shape[-1], self.conv.kernel_size[0], self.conv.stride[0]
        out_length = -(-length // s)  # ceil(L / s)
        p = max(0, (out_length - 1) * s + k - length)
        return self.conv(F.pad(x, (p // 2, p - p // 2)))  # the odd extra sample goes on the right


class BasicBlock(nn.Module):
    """[Swish] -> 1x1 conv -> Swish -> grouped k conv (stride) -> Swish -> 1x1 conv -> squeeze-excitation, + shortcut.

    The first block of a stage downsamples by `stride`; its shortcut is max-pooled the same way and zero-padded in
    channels when the stage widens. The very first block of the network skips the pre-activation because the stem
    has just applied one.
    """

    def __init__(self, in_channels: int, out_channels: int, cfg: Net1DConfig, stride: int, is_first_block: bool):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.is_first_block = stride, is_first_block
        self.use_bn, self.use_do = cfg.use_bn, cfg.use_do
        mid = int(out_channels * cfg.ratio)
        self.bn1 = nn.BatchNorm1d(in_channels)
        self.conv1 = ConvPadSame(in_channels, mid, 1)
        self.bn2 = nn.BatchNorm1d(mid)
        self.conv2 = ConvPadSame(mid, mid, cfg.kernel_size, stride, groups=out_channels // cfg.groups_width)
        self.bn3 = nn.BatchNorm1d(mid)
        self.conv3 = ConvPadSame(mid, out_channels, 1)
        # squeeze-excitation with reduction 2, as in the reference
        self.se_fc1 = nn.Linear(out_channels, out_channels // 2)
        self.se_fc2 = nn.Linear(out_channels // 2, out_channels)

    def _pre_activation(self, x: torch.Tensor, bn: nn.BatchNorm1d) -> torch.Tensor:
        if self.use_bn:
            x = bn(x)
        x = swish(x)
        if self.use_do:
            x = F.dropout(x, p=0.5, training=self.training)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.is_first_block else self._pre_activation(x, self.bn1)
        out = self.conv1(out)
        out = self.conv2(self._pre_activation(out, self.bn2))
        out = self.conv3(self._pre_activation(out, self.bn3))  # (B, C_out, L')

        se = self.se_fc2(swish(self.se_fc1(out.mean(-1))))  # (B, C_out)
        out = out * torch.sigmoid(se)[:, :, None]  # (B, C_out, L')

        identity = x
        if self.stride > 1:
            # reference `MyMaxPool1dPadSame`: zero-pad stride-1 samples (right-heavy), then max-pool by stride;
            # on an odd length the last window compares the last sample with a padded 0
            p = self.stride - 1
            identity = F.max_pool1d(F.pad(identity, (p // 2, p - p // 2)), self.stride)  # (B, C_in, L')
        if self.out_channels != self.in_channels:
            grow = self.out_channels - self.in_channels
            identity = F.pad(identity, (0, 0, grow // 2, grow - grow // 2))  # (B, C_out, L'), zeros front and back
        return out + identity


class BasicStage(nn.Module):
    """`m_blocks` blocks; only the first changes length (stride) and width (reference `BasicStage`)."""

    def __init__(self, in_channels: int, out_channels: int, m_blocks: int, cfg: Net1DConfig, i_stage: int):
        super().__init__()
        self.block_list = nn.ModuleList(
            BasicBlock(
                in_channels if b == 0 else out_channels,
                out_channels,
                cfg,
                stride=cfg.stride if b == 0 else 1,
                is_first_block=(i_stage == 0 and b == 0),
            )
            for b in range(m_blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block_list:
            x = block(x)
        return x


class Net1D(nn.Module):
    """Stem (SAME conv k, stride 2, Swish) -> stages -> time-mean -> optional `dense` head."""

    def __init__(self, cfg: Net1DConfig):
        super().__init__()
        self.cfg = cfg
        # the reference fixes the stem stride at 2, independent of cfg.stride
        self.first_conv = ConvPadSame(cfg.in_channels, cfg.base_filters, cfg.kernel_size, stride=2)
        self.first_bn = nn.BatchNorm1d(cfg.base_filters)
        widths = (cfg.base_filters, *cfg.filter_list)
        self.stage_list = nn.ModuleList(
            BasicStage(widths[s], widths[s + 1], m, cfg, s) for s, m in enumerate(cfg.m_blocks_list)
        )
        self.dense = nn.Linear(widths[-1], cfg.n_classes) if cfg.n_classes > 0 else None

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, L) -> last-stage map (B, 1024, L / 256) for the reference config (5000 -> 20)."""
        if x.ndim != 3 or x.shape[1] != self.cfg.in_channels:
            raise ValueError(f"Net1D: expected input (B, {self.cfg.in_channels}, L), found {tuple(x.shape)}")
        out = self.first_conv(x)
        if self.cfg.use_bn:
            out = self.first_bn(out)
        out = swish(out)
        for stage in self.stage_list:
            out = stage(out)
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, L) -> (B, 1024): time-mean of the last stage, before `dense` (the ECG embedding)."""
        return self.forward_map(x).mean(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dense is None:
            raise ValueError("Net1D was built with n_classes=0 (no dense head): call forward_features instead")
        return self.dense(self.forward_features(x))  # (B, n_classes)


def config_from_state_dict(state_dict: dict[str, torch.Tensor], base: Net1DConfig | None = None) -> Net1DConfig:
    """The Net1D widths of a checkpoint, read from its tensor shapes: base_filters and kernel_size (first_conv),
    one stage per `stage_list.{s}` and one block per `block_list.{b}` (m_blocks_list), each stage's width (its first
    block's conv3 output: filter_list), ratio (conv1 output / stage width), groups_width (stage width / the groups
    of conv2) and n_classes (`dense.weight` rows, 0 without it). Everything else (in_channels, stride, use_bn,
    use_do) comes from `base`: in_channels stays 12 so a 1-lead checkpoint is refused by shape, not half-loaded.
    The released 12_lead_ECGFounder.pth gives Net1DConfig() exactly."""
    base = base or Net1DConfig()
    stem = state_dict.get("first_conv.conv.weight")
    if stem is None or stem.ndim != 3:
        return base  # not a Net1D checkpoint: the key check names what is missing
    blocks: dict[int, set[int]] = {}
    for k in state_dict:
        parts = k.split(".")
        if len(parts) > 4 and parts[0] == "stage_list" and parts[2] == "block_list":
            if parts[1].isdigit() and parts[3].isdigit():
                blocks.setdefault(int(parts[1]), set()).add(int(parts[3]))
    stages = sorted(blocks)
    if not stages or stages != list(range(len(stages))):
        return base
    widths, ratio, groups_width = [], base.ratio, base.groups_width
    for s in stages:
        conv1 = state_dict.get(f"stage_list.{s}.block_list.0.conv1.conv.weight")
        conv2 = state_dict.get(f"stage_list.{s}.block_list.0.conv2.conv.weight")
        conv3 = state_dict.get(f"stage_list.{s}.block_list.0.conv3.conv.weight")
        if conv1 is None or conv2 is None or conv3 is None:
            return base
        width = int(conv3.shape[0])
        widths.append(width)
        if s == 0:
            ratio = int(conv1.shape[0]) / width
            groups = int(conv2.shape[0]) // max(int(conv2.shape[1]), 1)  # (mid, mid / groups, k)
            groups_width = width // max(groups, 1)
    dense = state_dict.get("dense.weight")
    return replace(base, base_filters=int(stem.shape[0]), kernel_size=int(stem.shape[2]), ratio=ratio,
                   filter_list=tuple(widths), m_blocks_list=tuple(len(blocks[s]) for s in stages),
                   groups_width=groups_width, n_classes=int(dense.shape[0]) if dense is not None else 0)


class ECGEncoder(Net1D):
    """Frozen ECGFounder trunk: preprocessed (B, 12, 5000) ECG -> (B, E) embedding (E = the last stage's width,
    1024 for ECGFounder); always in eval mode.

    Subclasses Net1D without the dense head so its parameter names are the checkpoint's own.
    """

    def __init__(self, cfg: Net1DConfig | None = None):
        super().__init__(replace(cfg or Net1DConfig(), n_classes=0))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "ECGEncoder":
        return super().train(False)  # frozen: a parent's .train() must not switch on dropout/BN updates

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)  # (B, 1024)
