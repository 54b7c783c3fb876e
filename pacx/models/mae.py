"""The masked autoencoder of Stage 1a: a ViT encoder that sees 10% of the patches and a light decoder that
reconstructs the pixels of the rest.

Implements METHOD.md "Stage 1a" following facebookresearch/mae `models_mae.py` (He et al., "Masked Autoencoders Are
Scalable Vision Learners", sec. 3): `patchify` / `unpatchify`, per-sample `random_masking` by argsort of uniform
noise, `forward_encoder`, `forward_decoder`, `forward_loss` (MSE on masked patches only, optional `norm_pix_loss`).
The encoder *is* a `VisionTransformer` (its parameters stay at the top level), so the state dict has the official
MAE checkpoint layout: the 150 encoder keys plus `mask_token`, `decoder_embed`, `decoder_pos_embed`,
`decoder_blocks.{i}.*`, `decoder_norm`, `decoder_pred`.

Notation: B = batch, L = patches (G*G), K = kept patches, D = encoder width, Dd = decoder width,
P = patch side, G = patches per side, R = registers.
"""
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from pacx.models.pos_embed import sincos_2d
from pacx.models.vit import Block, ViTConfig, VisionTransformer, init_weights, vit_base


@dataclass
class MAEConfig:
    encoder: ViTConfig = field(default_factory=vit_base)
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    norm_pix_loss: bool = False  # False in the PaCX reference (ImageNet-normalised targets); True in the MAE paper


def mae_base(**kw) -> MAEConfig:
    return MAEConfig(**kw)


def mae_tiny(**kw) -> MAEConfig:
    from pacx.models.vit import vit_tiny

    return MAEConfig(**{"encoder": vit_tiny(), "decoder_embed_dim": 32, "decoder_depth": 2, "decoder_num_heads": 4,
                        **kw})


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, G*P, G*P) -> (B, G*G, P*P*C); each patch vector is ordered (row, column, channel) as in MAE."""
    B, C, Hh, Ww = imgs.shape
    h, w = Hh // p, Ww // p
    x = imgs.reshape(B, C, h, p, w, p)  # (B, C, G, P, G, P)
    x = torch.einsum("nchpwq->nhwpqc", x)  # (B, G, G, P, P, C)
    return x.reshape(B, h * w, p * p * C)  # (B, L, P*P*C)


def unpatchify(x: torch.Tensor, p: int, channels: int = 3) -> torch.Tensor:
    """(B, G*G, P*P*C) -> (B, C, G*P, G*P), the inverse of `patchify`."""
    B, L, _ = x.shape
    h = w = int(L**0.5)
    x = x.reshape(B, h, w, p, p, channels)  # (B, G, G, P, P, C)
    x = torch.einsum("nhwpqc->nchpwq", x)  # (B, C, G, P, G, P)
    return x.reshape(B, channels, h * p, w * p)


def random_masking(x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None):
    """Keep a random subset of `int(L * (1 - mask_ratio))` tokens per sample.

    x: (B, L, D). Returns the kept tokens (B, K, D), the binary mask (B, L) with 1 = removed (in the original patch
    order) and `ids_restore` (B, L) that unshuffles. `noise` (B, L) fixes the shuffle; by default exactly one
    `torch.rand(B, L)` is drawn, so a seed fixes the mask.
    """
    B, L, D = x.shape
    keep = int(L * (1 - mask_ratio))
    if noise is None:
        noise = torch.rand(B, L, device=x.device)
    ids_shuffle = torch.argsort(noise, dim=1)  # ascend: small is keep, large is remove
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]  # (B, K)
    x_kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, D))  # (B, K, D)
    mask = torch.ones(B, L, device=x.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)  # (B, L): back to patch order
    return x_kept, mask, ids_restore


class MaskedAutoencoder(VisionTransformer):
    def __init__(self, cfg: MAEConfig):
        super().__init__(cfg.encoder)
        self.mae_cfg = cfg
        enc, Dd = cfg.encoder, cfg.decoder_embed_dim
        self.decoder_embed = nn.Linear(enc.embed_dim, Dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, Dd))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, 1 + enc.num_patches, Dd), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            Block(Dd, cfg.decoder_num_heads, enc.mlp_ratio, True, enc.norm_eps) for _ in range(cfg.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(Dd, eps=enc.norm_eps)
        self.decoder_pred = nn.Linear(Dd, enc.patch_size**2 * enc.in_chans)
        self.decoder_pos_embed.data.copy_(sincos_2d(Dd, enc.grid_size, extra_tokens=1)[None])
        nn.init.normal_(self.mask_token, std=0.02)
        for m in [self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred]:
            m.apply(init_weights)

    def encoder_state_dict(self) -> dict:
        """The encoder's weights alone, loadable strictly into `VisionTransformer(cfg.encoder)`."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(DECODER_PREFIXES)}

    def forward_encoder(self, imgs: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None):
        x = self.embed_patches(imgs)  # (B, L, D): position added before masking, so kept tokens know where they are
        x, mask, ids_restore = random_masking(x, mask_ratio, noise)  # (B, K, D)
        x = self.run_blocks(self.prepend_prefix(x))  # (B, 1 + R + K, D)
        return x, mask, ids_restore

    def forward_decoder(self, x: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        x = self.decoder_embed(x[:, self.cfg.num_registers:])  # drop registers; (B, 1 + K, Dd)
        B, L = ids_restore.shape
        masked = self.mask_token.expand(B, L + 1 - x.shape[1], -1)  # (B, L - K, Dd)
        x_ = torch.cat([x[:, 1:], masked], dim=1)  # (B, L, Dd) in shuffled order
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))  # (B, L, Dd) unshuffled
        x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos_embed  # (B, 1 + L, Dd)
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_pred(self.decoder_norm(x))  # (B, 1 + L, P*P*C)
        return x[:, 1:]  # drop the CLS position: (B, L, P*P*C)

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        target = patchify(imgs, self.cfg.patch_size)  # (B, L, P*P*C)
        if self.mae_cfg.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)  # unbiased, as the reference
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(dim=-1)  # (B, L): per-patch MSE
        return (loss * mask).sum() / mask.sum()  # mean over removed patches only

    def forward(self, imgs: torch.Tensor, mask_ratio: float = 0.9, noise: torch.Tensor | None = None):
        """Returns (loss, pred (B, L, P*P*C), mask (B, L) with 1 = removed)."""
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        loss = self.forward_loss(imgs, pred.float(), mask)
        return loss, pred, mask


DECODER_PREFIXES = ("decoder_", "mask_token")


def mae_small(**kw) -> MAEConfig:
    from pacx.models.vit import vit_small

    return MAEConfig(**{"encoder": vit_small(), "decoder_embed_dim": 256, "decoder_depth": 4,
                        "decoder_num_heads": 8, **kw})


MAE_PRESETS = {"base": mae_base, "small": mae_small, "tiny": mae_tiny}


def mae_config_from_dict(d: dict) -> MAEConfig:
    """Rebuild the config saved in a checkpoint (`dataclasses.asdict` form)."""
    d = {k: v for k, v in d.items() if k != "kind"}
    return MAEConfig(**{**d, "encoder": ViTConfig(**d["encoder"])})
