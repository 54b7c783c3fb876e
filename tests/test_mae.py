"""The MAE against an independent re-statement of facebookresearch/mae `models_mae.py` built from timm blocks, plus
inverse and property checks of patchify / masking / loss."""
import functools

import pytest
import torch
import torch.nn.functional as F

from pacx.models.mae import MaskedAutoencoder, mae_base, mae_tiny, patchify, random_masking, unpatchify
from pacx.models.vit import VisionTransformer

timm = pytest.importorskip("timm")


def test_parameter_counts_and_official_key_layout():
    with torch.device("meta"):
        model = MaskedAutoencoder(mae_base())
    total = sum(p.numel() for p in model.parameters())
    encoder = sum(v.numel() for v in model.encoder_state_dict().values())
    assert (encoder, total - encoder, total) == (85_798_656, 26_109_184, 111_907_840)
    keys = list(model.state_dict())
    assert len(keys) == 254 and len(model.encoder_state_dict()) == 150
    assert {"mask_token", "decoder_pos_embed", "decoder_embed.weight", "decoder_norm.bias", "decoder_pred.weight",
            "decoder_blocks.7.mlp.fc2.weight", "blocks.11.attn.qkv.weight", "norm.weight"} <= set(keys)


def test_patchify_layout_and_inverse():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 48)
    p = patchify(x, 8)
    assert p.shape == (2, 4 * 6, 8 * 8 * 3)
    # Independent: F.unfold yields (B, C*P*P, L) ordered (channel, row, col); MAE orders each patch (row, col, channel).
    cols = F.unfold(x, kernel_size=8, stride=8)  # (B, C*P*P, L)
    want = cols.reshape(2, 3, 8, 8, 24).permute(0, 4, 2, 3, 1).reshape(2, 24, 192)
    torch.testing.assert_close(p, want, rtol=0, atol=0)
    sq = torch.randn(2, 3, 32, 32)
    assert torch.equal(unpatchify(patchify(sq, 8), 8), sq)


def test_random_masking_properties():
    torch.manual_seed(1)
    B, L, D = 4, 196, 5
    x = torch.randn(B, L, D)
    noise = torch.rand(B, L)
    kept, mask, ids_restore = random_masking(x, 0.9, noise)
    assert kept.shape == (B, 19, D)  # int(196 * 0.1) = 19
    assert torch.all(mask.sum(1) == L - 19)
    # The kept tokens are exactly the 19 with the smallest noise, in ascending-noise order.
    order = noise.argsort(1)[:, :19]
    torch.testing.assert_close(kept, torch.stack([x[b, order[b]] for b in range(B)]))
    assert torch.all(mask.gather(1, order) == 0)
    # ids_restore undoes the shuffle.
    shuffled = torch.gather(x, 1, noise.argsort(1)[..., None].expand(-1, -1, D))
    torch.testing.assert_close(torch.gather(shuffled, 1, ids_restore[..., None].expand(-1, -1, D)), x)


def test_same_seed_gives_same_mask():
    x = torch.randn(2, 16, 3)
    torch.manual_seed(5)
    _, m1, _ = random_masking(x, 0.75)
    torch.manual_seed(5)
    _, m2, _ = random_masking(x, 0.75)
    assert torch.equal(m1, m2)


class OfficialStyleMAE(torch.nn.Module):
    """A re-statement of the official `MaskedAutoencoderViT` forward on timm `Block`s, for comparison only."""

    def __init__(self, cfg):
        super().__init__()
        from timm.models.vision_transformer import Block, PatchEmbed

        enc = cfg.encoder
        norm = functools.partial(torch.nn.LayerNorm, eps=1e-6)
        self.p = enc.patch_size
        self.patch_embed = PatchEmbed(enc.img_size, enc.patch_size, 3, enc.embed_dim)
        self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, enc.embed_dim))
        self.pos_embed = torch.nn.Parameter(torch.zeros(1, 1 + enc.num_patches, enc.embed_dim))
        self.blocks = torch.nn.ModuleList(Block(enc.embed_dim, enc.num_heads, 4.0, qkv_bias=True, norm_layer=norm)
                                          for _ in range(enc.depth))
        self.norm = norm(enc.embed_dim)
        Dd = cfg.decoder_embed_dim
        self.decoder_embed = torch.nn.Linear(enc.embed_dim, Dd)
        self.mask_token = torch.nn.Parameter(torch.zeros(1, 1, Dd))
        self.decoder_pos_embed = torch.nn.Parameter(torch.zeros(1, 1 + enc.num_patches, Dd))
        self.decoder_blocks = torch.nn.ModuleList(Block(Dd, cfg.decoder_num_heads, 4.0, qkv_bias=True,
                                                        norm_layer=norm) for _ in range(cfg.decoder_depth))
        self.decoder_norm = norm(Dd)
        self.decoder_pred = torch.nn.Linear(Dd, self.p**2 * 3)

    def forward(self, imgs, mask_ratio, noise):
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        N, L, D = x.shape
        len_keep = int(L * (1 - mask_ratio))
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        x = torch.gather(x, 1, ids_shuffle[:, :len_keep].unsqueeze(-1).repeat(1, 1, D))
        mask = torch.ones([N, L])
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_embed(self.norm(x))
        mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:, :]
        return pred, mask


@pytest.mark.parametrize("norm_pix", [False, True])
def test_forward_matches_official_style_reference(norm_pix):
    torch.manual_seed(2)
    cfg = mae_tiny(norm_pix_loss=norm_pix)
    ours = MaskedAutoencoder(cfg).eval()
    ref = OfficialStyleMAE(cfg).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    imgs = torch.randn(3, 3, 64, 64)
    noise = torch.rand(3, cfg.encoder.num_patches)
    with torch.no_grad():
        loss, pred, mask = ours(imgs, mask_ratio=0.75, noise=noise)
        want_pred, want_mask = ref(imgs, 0.75, noise)
    torch.testing.assert_close(pred, want_pred, atol=1e-5, rtol=0)
    assert torch.equal(mask, want_mask)
    # The loss by hand: per-patch MSE against (optionally normalised) pixels, averaged over removed patches only.
    target = patchify(imgs, cfg.encoder.patch_size)
    if norm_pix:
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    per_patch = ((want_pred - target) ** 2).mean(-1)
    want_loss = per_patch[want_mask.bool()].mean()
    torch.testing.assert_close(loss, want_loss, atol=1e-6, rtol=0)


def test_loss_ignores_visible_patches():
    torch.manual_seed(3)
    model = MaskedAutoencoder(mae_tiny())
    imgs = torch.randn(2, 3, 64, 64)
    noise = torch.rand(2, 64)
    _, pred, mask = model(imgs, 0.75, noise)
    target = patchify(imgs, 8)
    # Replacing the prediction at visible patches by anything leaves the loss unchanged.
    junk = torch.where(mask[..., None].bool(), pred, torch.full_like(pred, 1e3))
    assert model.forward_loss(imgs, junk, mask) == model.forward_loss(imgs, pred, mask)
    assert model.forward_loss(imgs, torch.where(mask[..., None].bool(), target, pred), mask) == 0


def test_encoder_state_dict_loads_into_vit():
    model = MaskedAutoencoder(mae_tiny())
    vit = VisionTransformer(model.cfg)
    vit.load_state_dict(model.encoder_state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(vit(x), model.forward_features(x)[:, 0])
