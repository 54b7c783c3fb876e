"""Analytic FLOP counts of the ViT and MAE training steps (matmul multiply-adds x 2), for utilisation figures.

Used by `benchmarks/bench.py` (achieved FLOP/s as a fraction of a measured matmul rate, or of a GPU's bf16 peak) and
checked against torch's FlopCounterMode in tests/test_bench.py.

Notation: B = batch, N = tokens, L = patches, K = kept patches, D = width, Dd = decoder width, P = patch side.
"""
from pacx.models.mae import MAEConfig
from pacx.models.vit import ViTConfig


def blocks_forward_flops(tokens: int, dim: int, depth: int, mlp_ratio: float) -> float:
    """One image through `depth` pre-norm blocks: per token qkv 3D^2 + proj D^2 + MLP 2*r*D^2 multiply-adds, and
    attention scores QK^T plus the weighted sum AV, N^2 * D each."""
    hidden = int(dim * mlp_ratio)
    per_token = 2 * (3 * dim * dim + dim * dim + 2 * dim * hidden)
    return depth * (tokens * per_token + 2 * 2 * tokens * tokens * dim)


def _patch_embed_flops(cfg: ViTConfig) -> float:
    return 2 * cfg.num_patches * cfg.in_chans * cfg.patch_size**2 * cfg.embed_dim


def vit_train_flops(cfg: ViTConfig, batch: int) -> float:
    """Forward + backward of the whole ViT on `batch` images. A matmul's backward costs twice its forward (the
    input's and the weight's gradients), except the patch embedding's: the images need no gradient."""
    blocks = blocks_forward_flops(1 + cfg.num_registers + cfg.num_patches, cfg.embed_dim, cfg.depth, cfg.mlp_ratio)
    return batch * (3 * blocks + 2 * _patch_embed_flops(cfg))


def mae_train_flops(cfg: MAEConfig, batch: int, mask_ratio: float) -> float:
    """Forward + backward of the MAE: the encoder sees 1 + R + K tokens, the decoder 1 + L (METHOD.md "Stage 1a")."""
    enc, Dd = cfg.encoder, cfg.decoder_embed_dim
    L = enc.num_patches
    K = int(L * (1 - mask_ratio))
    encoder = blocks_forward_flops(1 + enc.num_registers + K, enc.embed_dim, enc.depth, enc.mlp_ratio)
    decoder = blocks_forward_flops(1 + L, Dd, cfg.decoder_depth, enc.mlp_ratio)
    linears = 2 * (1 + K) * enc.embed_dim * Dd + 2 * (1 + L) * Dd * enc.patch_size**2 * enc.in_chans
    return batch * (3 * (encoder + decoder + linears) + 2 * _patch_embed_flops(enc))
