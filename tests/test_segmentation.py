"""Segmentation probe (pacx/eval/segmentation.py): the reference decoder's layers, the loss against a hand value,
image and mask moved together by the augmentation, and training that improves Dice on a frozen backbone."""
import numpy as np
import pytest
import torch

from pacx.eval.segmentation import (SegConfig, SegDecoder, evaluate_segmentation, patch_tokens, seg_sample,
                               segmentation_loss, soft_dice_loss, train_segmentation)
from pacx.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from pacx.models.vit import VisionTransformer, vit_tiny


def test_decoder_layers_match_reference():
    dec = SegDecoder(embed_dim=768, grid_size=14)
    shapes = {k: tuple(v.shape) for k, v in dec.state_dict().items()}
    assert shapes == {  # Models/models.py CXRModel.decoder for ViT-B: Conv3x3 768->256, then 4 x ConvT(2, s2)
        "decoder.0.weight": (256, 768, 3, 3), "decoder.0.bias": (256,),
        "decoder.2.weight": (256, 128, 2, 2), "decoder.2.bias": (128,),
        "decoder.4.weight": (128, 64, 2, 2), "decoder.4.bias": (64,),
        "decoder.6.weight": (64, 32, 2, 2), "decoder.6.bias": (32,),
        "decoder.8.weight": (32, 1, 2, 2), "decoder.8.bias": (1,),
    }
    tokens = torch.randn(2, 196, 768)
    assert dec(tokens).shape == (2, 1, 224, 224)


def test_loss_is_bce_plus_soft_dice_by_hand():
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0]).reshape(1, 1, 2, 2)
    masks = torch.tensor([1.0, 0.0, 1.0, 1.0]).reshape(1, 1, 2, 2)
    p = torch.sigmoid(logits).flatten()
    m = masks.flatten()
    dice = (2 * (p * m).sum() + 1e-6) / (p.sum() + m.sum() + 1e-6)
    bce = -(m * p.log() + (1 - m) * (1 - p).log()).mean()
    assert soft_dice_loss(logits, masks).item() == pytest.approx(1 - dice.item())
    assert segmentation_loss(logits, masks).item() == pytest.approx((bce + 1 - dice).item(), rel=1e-6)


def test_augmentation_moves_image_and_mask_together():
    rng = np.random.default_rng(0)
    mask = torch.from_numpy(rng.random((1, 32, 32)) < 0.3).float()
    image = (mask * 255).to(torch.uint8).repeat(3, 1, 1)  # the mask drawn into the image
    for seed in range(6):
        img, m = seg_sample(image, mask, 32, torch.Generator().manual_seed(seed), train=True)
        pixels = img * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
        assert torch.equal((pixels[0] > 0.5).float(), m[0])
    _, m_eval = seg_sample(image, mask, 32)
    assert torch.equal(m_eval, mask)


def synthetic(n, seed):
    """Images with a bright square; the mask is the square."""
    g = torch.Generator().manual_seed(seed)
    imgs, masks = torch.full((n, 3, 32, 32), -1.0), torch.zeros(n, 1, 32, 32)
    for i in range(n):
        r, c = torch.randint(0, 20, (2,), generator=g).tolist()
        imgs[i, :, r:r + 12, c:c + 12] = 1.5
        masks[i, :, r:r + 12, c:c + 12] = 1.0
    return imgs, masks


def test_training_improves_dice_and_leaves_backbone_frozen():
    torch.manual_seed(0)
    backbone = VisionTransformer(vit_tiny(img_size=32))  # 4 x 4 patches of 8 px
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    x, m = synthetic(16, 0)
    xv, mv = synthetic(8, 1)
    batches = [(x[i:i + 8], m[i:i + 8]) for i in (0, 8)]
    cfg = SegConfig(epochs=15, warmup_epochs=0, lr=3e-3, batch_size=8)
    dev = torch.device("cpu")
    torch.manual_seed(0)
    untrained = SegDecoder(64, backbone.cfg.grid_size)
    start = evaluate_segmentation(backbone, untrained, [(xv, mv)], dev)[0].mean()
    decoder, info = train_segmentation(backbone, lambda epoch: batches, [(xv, mv)], cfg, dev)
    dice = evaluate_segmentation(backbone, decoder, [(xv, mv)], dev)[0]
    assert dice.mean() == pytest.approx(info["best_val_dice"])
    assert info["best_val_dice"] == max(h["val_dice"] for h in info["history"])
    assert dice.mean() > 0.7 and start < 0.3
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in backbone.parameters())
    assert torch.equal(patch_tokens(backbone, xv), backbone.forward_features(xv)[:, 1:])  # (B, G*G, D)


def test_batch_pooled_score_is_the_originals():
    """The original's test Dice: counts pooled over each batch, batches averaged weighted by size; by hand on two
    batches of known predictions (logits +-10: sigmoid > 0.5 where positive)."""
    class Identity(torch.nn.Module):
        num_prefix_tokens = 0

        def eval(self):
            return self

        def forward_features(self, x):
            return x

    class Pass(torch.nn.Module):
        def forward(self, tokens, size):
            return tokens

    pred = torch.zeros(3, 1, 4, 4)
    mask = torch.zeros(3, 1, 4, 4)
    pred[0, 0, :2] = 1  # 8 predicted, 4 of them right
    mask[0, 0, 1:2] = 1
    mask[0, 0, 3:] = 1  # 8 true in all
    pred[1, 0, 0, 0] = 1  # one pixel, right
    mask[1, 0, 0, 0] = 1
    mask[2, 0, :, :1] = 1  # 4 true, none predicted
    logits = 20 * pred - 10
    batches = [(logits[:2], mask[:2]), (logits[2:], mask[2:])]
    dice, iou, pooled = evaluate_segmentation(Identity(), Pass(), batches, torch.device("cpu"))
    eps = 1e-6
    per_image = [(2 * 4 + eps) / (8 + 8 + eps), (2 + eps) / (2 + eps), eps / (4 + eps)]
    np.testing.assert_allclose(dice, per_image, rtol=1e-6)
    first, second = (2 * 5 + eps) / (9 + 9 + eps), eps / (4 + eps)  # batch 1 pools images 0 and 1
    assert pooled["dice"] == pytest.approx((2 * first + 1 * second) / 3, rel=1e-6)
    assert pooled["iou"] == pytest.approx((2 * (5 + eps) / (13 + eps) + 1 * eps / (4 + eps)) / 3, rel=1e-6)


def test_patience_stops_after_the_best_epoch_and_keeps_it():
    backbone = VisionTransformer(vit_tiny(img_size=32))
    x, m = torch.randn(4, 3, 32, 32), (torch.rand(4, 1, 32, 32) > 0.5).float()
    lines = []
    decoder, info = train_segmentation(backbone, lambda epoch: [(x, m)], [(x, m)],
                                       SegConfig(epochs=40, warmup_epochs=1, lr=0.0, patience=2),
                                       torch.device("cpu"), log=lines.append)
    # lr 0: the decoder never changes, so epoch 0 stays best and training stops after epochs 1 and 2
    assert info["best_epoch"] == 0 and len(info["history"]) == 3
    assert any("stopped after epoch 2" in line for line in lines)
