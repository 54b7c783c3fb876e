"""Fixed 2-D sin-cos position embeddings and their interpolation to other grid sizes.

Implements METHOD.md "Stage 1a" (position embeddings) following facebookresearch/mae `util/pos_embed.py`:
the table is computed in float64; the first D/2 channels encode the column (x) coordinate, the second D/2 the row
(y); each half is [sin(pos * w), cos(pos * w)] with w_i = 1 / 10000^(i / (D/4)). Extra tokens (CLS, registers) get
zero rows in front.

Notation: G = grid side, D = embedding width, E = extra tokens (CLS + registers).
"""
import math

import numpy as np
import torch
import torch.nn.functional as F


def sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """(M,) positions -> (M, dim) embedding: [sin(pos * w) | cos(pos * w)], float64."""
    assert dim % 2 == 0, f"sin-cos embedding needs an even width, got {dim}"
    omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # (dim/2,)
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)  # (M, dim/2)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)  # (M, dim)


def sincos_2d(dim: int, grid_size: int, extra_tokens: int = 0) -> torch.Tensor:
    """(E + G*G, D) float32 table; row h*G + w is the patch in row h, column w (the patch conv's flatten order)."""
    assert dim % 4 == 0, f"2-D sin-cos embedding needs a width divisible by 4, got {dim}"
    # meshgrid(w, h): grid[0] varies along columns, grid[1] along rows (the MAE reference order).
    gw, gh = np.meshgrid(np.arange(grid_size, dtype=np.float64), np.arange(grid_size, dtype=np.float64))
    emb = np.concatenate([sincos_1d(dim // 2, gw), sincos_1d(dim // 2, gh)], axis=1)  # (G*G, D): [column | row]
    if extra_tokens:
        emb = np.concatenate([np.zeros((extra_tokens, dim)), emb], axis=0)  # (E + G*G, D)
    return torch.from_numpy(emb).float()


def interpolate_pos_embed(pos_embed: torch.Tensor, new_grid: int, extra_tokens: int) -> torch.Tensor:
    """Resize a (1, E + G*G, D) table to (1, E + new_grid^2, D): bicubic, align_corners=False, no antialias,
    extra tokens kept unchanged (as MAE `interpolate_pos_embed`)."""
    extra, patches = pos_embed[:, :extra_tokens], pos_embed[:, extra_tokens:]
    old_grid = int(math.isqrt(patches.shape[1]))
    if old_grid * old_grid != patches.shape[1]:
        raise ValueError(f"position table has {patches.shape[1]} patch rows, which is not a square grid")
    if old_grid == new_grid:
        return pos_embed
    dim = patches.shape[-1]
    grid = patches.reshape(1, old_grid, old_grid, dim).permute(0, 3, 1, 2)  # (1, D, G, G)
    grid = F.interpolate(grid.float(), size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    patches = grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, dim)  # (1, G'*G', D)
    return torch.cat([extra, patches.to(pos_embed.dtype)], dim=1)
