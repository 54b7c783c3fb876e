"""The official-style MAE baseline of the benchmark: facebookresearch/mae `models_mae.py` rebuilt from timm's
`PatchEmbed` and `Block`, as the official code builds it. timm is a test / benchmark dependency: the library
(`pacx/`) never imports it, this folder does, lazily.

Notation: B = batch, N = tokens, L = patches, K = kept patches, D = width, Dd = decoder width, P = patch side.
"""
from functools import partial

import torch
import torch.nn as nn

from pacx.errors import PacxError
from pacx.models.mae import MAEConfig, patchify


def _timm_vit():
    try:
        from timm.models import vision_transformer
    except ImportError as e:
        raise PacxError("the benchmark compares against timm, which is not installed: pip install timm "
                        "(it is in requirements-test.txt; pacx itself never needs it)") from e
    return vision_transformer


class OfficialStyleMAE(nn.Module):
    """facebookresearch/mae `models_mae.py::MaskedAutoencoderViT` on timm's `PatchEmbed` and `Block` (the speed
    baseline; parameter names are the official ones, so a pacx MAE state dict loads with strict=True).
    One change: `noise` may be passed in, so both models mask the same patches."""

    def __init__(self, cfg: MAEConfig):
        super().__init__()
        vit = _timm_vit()
        enc, Dd = cfg.encoder, cfg.decoder_embed_dim
        norm_layer = partial(nn.LayerNorm, eps=enc.norm_eps)
        self.patch_size, self.norm_pix_loss = enc.patch_size, cfg.norm_pix_loss
        self.patch_embed = vit.PatchEmbed(enc.img_size, enc.patch_size, enc.in_chans, enc.embed_dim)
        L = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, enc.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, L + 1, enc.embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            vit.Block(enc.embed_dim, enc.num_heads, enc.mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(enc.depth)
        )
        self.norm = norm_layer(enc.embed_dim)
        self.decoder_embed = nn.Linear(enc.embed_dim, Dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, Dd))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, L + 1, Dd), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            vit.Block(Dd, cfg.decoder_num_heads, enc.mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(cfg.decoder_depth)
        )
        self.decoder_norm = norm_layer(Dd)
        self.decoder_pred = nn.Linear(Dd, enc.patch_size**2 * enc.in_chans)

    def random_masking(self, x, mask_ratio, noise):
        N, L, D = x.shape
        len_keep = int(L * (1 - mask_ratio))
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        x_masked = torch.gather(x, dim=1, index=ids_shuffle[:, :len_keep].unsqueeze(-1).repeat(1, 1, D))
        mask = torch.ones([N, L], device=x.device)
        mask[:, :len_keep] = 0
        return x_masked, torch.gather(mask, dim=1, index=ids_restore), ids_restore

    def forward_encoder(self, x, mask_ratio, noise):
        x = self.patch_embed(x) + self.pos_embed[:, 1:, :]
        x, mask, ids_restore = self.random_masking(x, mask_ratio, noise)
        cls_token = self.cls_token + self.pos_embed[:, :1, :]
        x = torch.cat((cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), mask, ids_restore

    def forward_decoder(self, x, ids_restore):
        x = self.decoder_embed(x)
        mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:, :]

    def forward_loss(self, imgs, pred, mask):
        target = patchify(imgs, self.patch_size)
        if self.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum()

    def forward(self, imgs, mask_ratio=0.75, noise=None):
        if noise is None:
            noise = torch.rand(imgs.shape[0], self.patch_embed.num_patches, device=imgs.device)
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(imgs, pred, mask), pred, mask


# ---- timing ----
