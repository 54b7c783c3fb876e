"""The Stage-2 model: the Stage-1 CXR encoder adapted with LoRA (or with its last blocks unfrozen) plus the five
distillation heads; `export_encoder` merges the adapters and returns the plain ViT that is used at inference.

METHOD.md "Stage 2" (CXR encoder, heads, total loss, export); reference: Lyce24/PACX-MAE `Modules/pacx_lit.py`
(`CrossModalCXRDistillation`). The heads live in `pacx.models.heads`, the adapters in `pacx.models.lora`.
"""
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from pacx.models.heads import DistillHeads, HeadsConfig
from pacx.models.lora import inject_lora, mark_trainable, merge_lora
from pacx.models.vit import ViTConfig, VisionTransformer


@dataclass
class PaCXConfig:
    encoder: ViTConfig
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    strategy: str = "lora"  # lora | last_n
    lora_r: int = 8
    lora_alpha: float = 16
    lora_dropout: float = 0.1
    last_n: int = 4


class PaCX(nn.Module):
    def __init__(self, cfg: PaCXConfig, encoder: VisionTransformer | None = None):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder if encoder is not None else VisionTransformer(cfg.encoder)
        if cfg.strategy == "lora":
            inject_lora(self.encoder, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout)
        self.trainable_encoder_params = mark_trainable(self.encoder, cfg.strategy, cfg.last_n)
        self.heads = DistillHeads(cfg.heads)

    def forward(self, cxr: torch.Tensor, ecg: torch.Tensor | None = None, labs: torch.Tensor | None = None):
        """cxr (B, 3, S, S) images; ecg (B, 1024) / labs (B, 256) frozen targets -> (loss, parts, head outputs)."""
        z = self.encoder(cxr)  # (B, D): the CLS feature, the only thing kept at inference
        out = self.heads.project(z, ecg, labs)
        loss, parts = self.heads.compute_loss(out, ecg, labs)
        return loss, parts, out

    def export_encoder(self) -> VisionTransformer:
        """A plain ViT with the adapters merged in (the encoder is left as it is)."""
        return merge_lora(self.encoder).eval()

    def config_dict(self) -> dict:
        return {"kind": "pacx", **asdict(self.cfg)}


EXPORT_ORIGIN = "pacx_stage2"  # marks train_distill.py's encoder.pt (Stage 3 fine-tunes such a backbone differently)


def timm_arguments(cfg: ViTConfig) -> dict:
    """How to build the same network in timm: `timm.models.vision_transformer.VisionTransformer(**kwargs,
    norm_layer=functools.partial(torch.nn.LayerNorm, eps=layer_norm_eps))`, then `load_state_dict(model,
    strict=True)`. The eps has to be passed: timm's default is 1e-6, the Stage-2 encoder's 1e-5 (a quirk)."""
    return {"kwargs": {"img_size": cfg.img_size, "patch_size": cfg.patch_size, "in_chans": cfg.in_chans,
                       "embed_dim": cfg.embed_dim, "depth": cfg.depth, "num_heads": cfg.num_heads,
                       "mlp_ratio": cfg.mlp_ratio, "qkv_bias": cfg.qkv_bias, "reg_tokens": cfg.num_registers,
                       "num_classes": 0, "global_pool": "token"},
            "layer_norm_eps": cfg.norm_eps}


def export_checkpoint(model: PaCX) -> dict:
    """{'model': plain ViT state dict, 'config': {'kind': 'vit', ...}, 'timm': `timm_arguments`, 'origin'}: loads
    strictly into `pacx.models.vit` (and timm)."""
    enc = model.export_encoder()
    return {"model": enc.state_dict(), "config": {"kind": "vit", **asdict(enc.cfg)}, "timm": timm_arguments(enc.cfg),
            "origin": EXPORT_ORIGIN}
