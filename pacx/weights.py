"""Reading the checkpoints users bring into pacx models: one function per target, every known layout.

Layouts (DESIGN.md "Stage 1a", Checkpoints):
- official MAE `mae_pretrain_vit_base.pth` = {'model': 150 encoder keys}; `..._full.pth` / `mae_visualize_*.pth` add
  the decoder (254 keys);
- timm ViT-B: a bare state dict (or under 'state_dict' / 'model') with the same 150 encoder keys plus `head.*`;
- pacx's own checkpoints: {'model': ..., 'config': {'kind': 'mae' | 'vit' | ...}, ...};
- original PaCX-MAE Lightning Stage 1: {'state_dict': {'model.<MAE key>': ...}};
- original PaCX-MAE Lightning Stage 2: {'state_dict': {'cxr_encoder.base_model.model.<ViT key>': ...}} with peft LoRA
  layers, and pacx's own Stage-2 `last.pt` ('encoder.<ViT key>' with `pacx.models.lora` layers): the adapters are merged
  (W + alpha / r * B @ A, alpha / r = 2 in the reference), giving plain ViT keys.
Everything goes through `pacx.checkpoint.load` (weights_only=True). Loads are strict: a mismatch names the keys.
"""
import torch

from pacx.checkpoint import load
from pacx.errors import PacxError
from pacx.models.lora import ORIGINAL_ENCODER_PREFIX, from_original_pacx_stage2
from pacx.models.mae import DECODER_PREFIXES, MaskedAutoencoder
from pacx.models.vit import ViTConfig, VisionTransformer, resize_pos_embed

WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def read_state_dict(path, lora_scaling: float = 2.0) -> dict:
    """The tensor dict inside any of the layouts above, with DDP/compile prefixes removed; Lightning's `model.`
    prefix is removed too (Stage-1 checkpoints of the original PaCX-MAE), Stage-2 adapters are merged."""
    obj = load(path)
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PacxError(f"{path}: expected a state dict of tensors (optionally under 'model' or 'state_dict')")
    out = {}
    for k, v in obj.items():
        for prefix in WRAPPER_PREFIXES:
            k = k.removeprefix(prefix)
        out[k] = v
    if any(k.startswith("model.") for k in out) and not any(k.startswith("blocks.") for k in out):
        out = {k.removeprefix("model."): v for k, v in out.items() if k.startswith("model.")}
    if any(k.startswith(ORIGINAL_ENCODER_PREFIX) for k in out):
        out = from_original_pacx_stage2(out)
    elif any(k.startswith("encoder.blocks.") for k in out):  # a pacx Stage-2 training checkpoint
        out = {k.removeprefix("encoder."): v for k, v in out.items() if k.startswith("encoder.")}
    return merge_lora_keys(out, lora_scaling)


def merge_lora_keys(state: dict, scaling: float) -> dict:
    """`<name>.base_layer.{weight,bias}` + `<name>.lora_{A,B}` -> `<name>.{weight,bias}` with W + scaling * B @ A."""
    out = {}
    for k, v in state.items():
        if k.endswith(".base_layer.weight"):
            name = k.removesuffix(".base_layer.weight")
            A, B = state[f"{name}.lora_A"].float(), state[f"{name}.lora_B"].float()
            out[f"{name}.weight"] = (v.float() + scaling * B @ A).to(v.dtype)  # (O, I) + (O, r) @ (r, I)
        elif k.endswith(".base_layer.bias"):
            out[k.replace(".base_layer.bias", ".bias")] = v
        elif not k.endswith((".lora_A", ".lora_B")):
            out[k] = v
    return out


def load_strict(model: torch.nn.Module, state: dict, source) -> None:
    """`load_state_dict(strict=True)` with a one-line error naming the mismatched keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        def show(keys):
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
        parts = [f"missing {len(missing)}: {show(missing)}" if missing else "",
                 f"unexpected {len(unexpected)}: {show(unexpected)}" if unexpected else "",
                 "shape mismatch: " + show([f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong])
                 if wrong else ""]
        raise PacxError(f"{source}: does not fit {type(model).__name__}: " + "; ".join(p for p in parts if p))
    model.load_state_dict(state, strict=True)


def encoder_only(state: dict) -> dict:
    """Drop an MAE decoder and a classification head (timm `head.*`, `fc_norm` of a global-pool model is kept so a
    mismatch stays visible)."""
    return {k: v for k, v in state.items() if not k.startswith(DECODER_PREFIXES) and not k.startswith("head.")}


def load_vit_weights(model: VisionTransformer, path) -> None:
    """Encoder weights from any layout into a plain ViT; `pos_embed` is interpolated to the model's grid."""
    state = resize_pos_embed(encoder_only(read_state_dict(path)), model.cfg)
    load_strict(model, state, path)


def load_mae_weights(model: MaskedAutoencoder, path) -> str:
    """A full MAE (encoder + decoder) loads strictly; an encoder-only file loads into the encoder and leaves the
    decoder at its fresh initialisation. Returns which of the two happened."""
    state = resize_pos_embed(read_state_dict(path), model.cfg)
    if any(k.startswith(DECODER_PREFIXES) for k in state):
        if "decoder_pos_embed" in state and state["decoder_pos_embed"].shape != model.decoder_pos_embed.shape:
            state["decoder_pos_embed"] = model.decoder_pos_embed.detach().clone()  # fixed sin-cos: recomputed
        load_strict(model, state, path)
        return "full"
    enc = VisionTransformer(model.cfg)
    load_strict(enc, encoder_only(state), path)
    model.load_state_dict({**model.state_dict(), **enc.state_dict()}, strict=True)
    return "encoder"


def checkpoint_vit_config(path) -> ViTConfig | None:
    """The encoder config a pacx checkpoint carries ('config' of kind mae / vit / pacx), or None (official MAE,
    timm and Lightning files carry none: the caller picks a preset)."""
    cfg = load(path).get("config")
    if not isinstance(cfg, dict) or "kind" not in cfg:
        return None
    enc = cfg["encoder"] if cfg["kind"] in ("mae", "pacx") else cfg if cfg["kind"] == "vit" else None
    return ViTConfig(**{k: v for k, v in enc.items() if k != "kind"}) if enc is not None else None
