"""The Vision Transformer encoder (ViT-B/16 for PaCX-MAE), written by hand.

Implements METHOD.md "Stage 1a" (encoder): pre-norm blocks, qkv bias, LayerNorm eps 1e-6, exact GELU, a CLS token and
a fixed 2-D sin-cos position embedding, no dropout or drop-path. Follows timm `vision_transformer.py` for the module
and parameter names (`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,
mlp.fc1,mlp.fc2}`, `norm`), so timm's `vit_base_patch16_224` and the official MAE encoder load with `strict=True`,
and facebookresearch/mae `models_mae.py` for the initialisation.

Optional register tokens (Darcet et al., "Vision Transformers Need Registers"; used by CXformer) sit between the CLS
token and the patches, as timm's `reg_token`; they get no position embedding.

Notation: B = batch, N = tokens, D = width, H = heads, Dh = D / H, P = patch side, G = patches per side, R = registers.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pacx.models.pos_embed import interpolate_pos_embed, sincos_2d


@dataclass
class ViTConfig:
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    norm_eps: float = 1e-6  # Stage 2 of the reference runs with 1e-5 (a quirk; see pacx docs of train_distill.py)
    num_registers: int = 0
    learned_pos_embed: bool = False  # False: the fixed sin-cos table (MAE); True: trained, as timm's ImageNet ViT

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2


def vit_base(**kw) -> ViTConfig:
    """ViT-B/16, the PaCX-MAE encoder."""
    return ViTConfig(**kw)


def vit_small(**kw) -> ViTConfig:
    """ViT-S/16 width, for quick GPU experiments."""
    return ViTConfig(**{"embed_dim": 384, "depth": 12, "num_heads": 6, **kw})


def vit_tiny(**kw) -> ViTConfig:
    """A few-hundred-thousand-parameter ViT for tests and CPU demos (64 px, 8 px patches)."""
    return ViTConfig(**{"img_size": 64, "patch_size": 8, "embed_dim": 64, "depth": 4, "num_heads": 4, **kw})


PRESETS = {"base": vit_base, "small": vit_small, "tiny": vit_tiny}


class PatchEmbed(nn.Module):
    """Non-overlapping P x P patches -> D, by a stride-P convolution."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, G, G)
        return x.flatten(2).transpose(1, 2)  # (B, G*G, D): patch index h*G + w


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)  # rows [q | k | v], each head-major with width Dh
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads)  # (B, N, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, N, Dh)
        attn = None
        if return_attn:
            # The explicit softmax, only when the probabilities are wanted (attention rollout).
            attn = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1)  # (B, H, N, N)
            x = attn @ v
        else:
            x = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, Dh); flash / memory-efficient kernels on CUDA
        x = x.transpose(1, 2).reshape(B, N, D)  # (B, N, D)
        return self.proj(x), attn


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) GELU, as timm and MAE
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        y, attn = self.attn(self.norm1(x), return_attn)
        x = x + y
        x = x + self.mlp(self.norm2(x))
        return (x, attn) if return_attn else x


def init_weights(module: nn.Module) -> None:
    """MAE `_init_weights`: Xavier-uniform Linear weights with zero bias, LayerNorm 1/0."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class VisionTransformer(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, D)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.reg_token = nn.Parameter(torch.zeros(1, cfg.num_registers, D)) if cfg.num_registers else None
        # A parameter (not a buffer) so the key `pos_embed` exists as in MAE/timm checkpoints; frozen when fixed.
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.num_patches, D), requires_grad=cfg.learned_pos_embed)
        self.blocks = nn.ModuleList(
            Block(D, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.norm_eps) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(D, eps=cfg.norm_eps)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        self.pos_embed.data.copy_(sincos_2d(self.cfg.embed_dim, self.cfg.grid_size, extra_tokens=1)[None])
        # The patch conv is initialised like a Linear on its flattened weight (MAE); its bias keeps torch's default.
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        if self.reg_token is not None:
            nn.init.normal_(self.reg_token, std=0.02)
        self.blocks.apply(init_weights)
        init_weights(self.norm)

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.cfg.num_registers

    def embed_patches(self, x: torch.Tensor) -> torch.Tensor:
        """Patches plus their position embedding, no prefix tokens: (B, 3, S, S) -> (B, N, D)."""
        return self.patch_embed(x) + self.pos_embed[:, 1:]

    def prepend_prefix(self, x: torch.Tensor) -> torch.Tensor:
        """Put [CLS (+ its position row), registers] in front of the patch tokens: (B, N, D) -> (B, 1 + R + N, D)."""
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)  # (B, 1, D)
        parts = [cls]
        if self.reg_token is not None:
            parts.append(self.reg_token.expand(x.shape[0], -1, -1))  # (B, R, D)
        return torch.cat(parts + [x], dim=1)  # (B, 1 + R + N, D)

    def run_blocks(self, x: torch.Tensor, return_attn: bool = False):
        attns = []
        for blk in self.blocks:
            if return_attn:
                x, attn = blk(x, return_attn=True)
                attns.append(attn)
            else:
                x = blk(x)
        x = self.norm(x)
        return (x, attns) if return_attn else x

    def forward_features(self, x: torch.Tensor, return_attn: bool = False):
        """All tokens after the final LayerNorm, (B, 1 + R + N, D); with return_attn also the per-layer attention
        probabilities, a list of `depth` tensors (B, H, 1 + R + N, 1 + R + N)."""
        return self.run_blocks(self.prepend_prefix(self.embed_patches(x)), return_attn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The downstream feature: the CLS token after the final LayerNorm, (B, D)."""
        return self.forward_features(x)[:, 0]


def resize_pos_embed(state_dict: dict, cfg: ViTConfig) -> dict:
    """Return a copy of `state_dict` whose `pos_embed` fits `cfg`'s patch grid (bicubic interpolation when the
    checkpoint was trained at another image size; extra tokens kept)."""
    out = dict(state_dict)
    pe = out.get("pos_embed")
    if pe is not None and pe.shape[1] != 1 + cfg.num_patches:
        out["pos_embed"] = interpolate_pos_embed(pe, cfg.grid_size, extra_tokens=1)
    return out
