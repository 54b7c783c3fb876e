"""Models from presets and checkpoints: every model a script builds comes from here, and every checkpoint is read once.

`read_checkpoint` reads any supported file (once, with `torch.load(weights_only=True)` through
`pacx.checkpoint.load`) into a `Checkpoint`: its tensors under pacx's own key names, and the model config it carries.
The `load_*` functions build a model from it; nothing they resolve is written back into a script's options (a script
reads the model's own `.cfg` instead).

Layouts (METHOD.md "Checkpoints"):
- official MAE `mae_pretrain_vit_base.pth` = {'model': 150 encoder keys}; `..._full.pth` / `mae_visualize_*.pth` add
  the decoder (254 keys);
- timm ViT-B: a bare state dict (or under 'state_dict' / 'model') with the same 150 encoder keys plus `head.*`;
- pacx's own checkpoints: {'model': ..., 'config': {'kind': 'mae' | 'vit' | 'pacx' | 'lab_dae', ...}, ...};
- original PaCX-MAE Lightning Stage 1: {'state_dict': {'model.<MAE key>': ...}};
- original PaCX-MAE Lightning Stage 2: {'state_dict': {'cxr_encoder.base_model.model.<ViT key>': ...}} with peft LoRA
  layers, and pacx's own Stage-2 `last.pt` ('encoder.<ViT key>' with `pacx.models.lora` layers): the adapters are
  merged, W + alpha / r * B @ A, with the alpha and r the pacx file records, or the original's r 8 / alpha 16; the
  original's last_n_blocks ablation: {'state_dict': {'cxr_encoder.<ViT key>': ...}} (no adapters);
- a lab DAE: pacx's {'model', 'config': {'kind': 'lab_dae', ...}} or the original Lightning {'state_dict':
  {'model.encoder.0.weight', ...}} (sizes from the weight shapes);
- ECGFounder's `12_lead_ECGFounder.pth`: {'state_dict': Net1D keys + `dense.*`} (the head is dropped).
Loads are strict: a mismatch names the keys.
"""
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from pacx.checkpoint import load
from pacx.errors import PacxError
from pacx.models.ecg import ECGEncoder, Net1DConfig, config_from_state_dict
from pacx.models.labs_dae import LabDAE, LabDAEConfig
from pacx.models.lora import ORIGINAL_ENCODER_PREFIX, from_original_pacx_stage2
from pacx.models.mae import DECODER_PREFIXES, MAE_PRESETS, MAEConfig, MaskedAutoencoder
from pacx.models.pacx_model import EXPORT_ORIGIN
from pacx.models.pos_embed import sincos_2d
from pacx.models.vit import PRESETS, ViTConfig, VisionTransformer, resize_pos_embed

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
ORIGINAL_LORA_SCALING = 16 / 8  # alpha / r of the original Stage 2 (`Stage2_PACX.py`: r 8, alpha 16)
ORIGINAL_STAGE2_EPS = 1e-5  # the LayerNorm eps the original evaluates its (config-less) Stage-2 checkpoints with


def vit_config(preset: str, img_size: int = 0) -> ViTConfig:
    """The ViT preset `preset` (base | small | tiny), at `img_size` when non-zero."""
    if preset not in PRESETS:
        raise PacxError(f"--model: expected one of {sorted(PRESETS)}, got {preset!r}")
    return with_img_size(PRESETS[preset](), img_size)


def with_img_size(cfg: ViTConfig, img_size: int) -> ViTConfig:
    """`cfg` at input size `img_size` (0: its own), which must be a positive multiple of the patch size."""
    if img_size:
        if img_size < 0 or img_size % cfg.patch_size:
            raise PacxError(f"--img_size: expected a positive multiple of the patch size {cfg.patch_size}, got "
                            f"{img_size}")
        cfg.img_size = img_size
    return cfg


def mae_config(preset: str, img_size: int = 0, norm_pix_loss: bool = False) -> MAEConfig:
    if preset not in MAE_PRESETS:
        raise PacxError(f"--model: expected one of {sorted(MAE_PRESETS)}, got {preset!r}")
    cfg = MAE_PRESETS[preset](norm_pix_loss=norm_pix_loss)
    with_img_size(cfg.encoder, img_size)
    return cfg


@dataclass
class Checkpoint:
    source: str
    state: dict  # tensors under pacx key names: wrapper prefixes removed, Lightning's stripped, adapters merged
    config: dict | None  # the model config a pacx file carries ({'kind': ...}); None for foreign files
    stage2: bool = False  # a Stage-2 (distilled) encoder: original Lightning, pacx last.pt or pacx encoder.pt

    def vit_config(self) -> ViTConfig | None:
        """The encoder config of a pacx MAE / ViT / Stage-2 file (None for foreign files: the caller picks a
        preset)."""
        kind = (self.config or {}).get("kind")
        enc = self.config.get("encoder") if kind in ("mae", "pacx") else self.config if kind == "vit" else None
        return build_config(ViTConfig, enc, self.source) if enc is not None else None

    def mae_config(self) -> MAEConfig | None:
        if (self.config or {}).get("kind") != "mae":
            return None
        return build_config(MAEConfig, {**self.config, "encoder": self.vit_config()}, self.source)


def build_config(cls, saved: dict, source):
    """`cls(**saved)` for a config dict a checkpoint carries; a field this version does not know (a file written by
    a newer pacx) or a missing one is a one-line error naming it."""
    if not isinstance(saved, dict):
        raise PacxError(f"{source}: its 'config' is not a dict of settings")
    known = {f.name for f in fields(cls)}
    values = {k: v for k, v in saved.items() if k != "kind"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PacxError(f"{source}: its config has field(s) {unknown} that this pacx's {cls.__name__} does not know "
                        f"(written by another version?); known: {sorted(known)}")
    try:
        return cls(**values)
    except TypeError as e:
        raise PacxError(f"{source}: its config does not build a {cls.__name__} ({e})") from None


def read_checkpoint(path) -> Checkpoint:
    """Read `path` once and bring its tensors to pacx's key names (see the module docstring for the layouts)."""
    obj = load(path)
    config = obj.get("config") if isinstance(obj, dict) and isinstance(obj.get("config"), dict) else None
    state = obj
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            state = obj[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PacxError(f"{path}: expected a state dict of tensors (optionally under 'model' or 'state_dict')")
    out = {}
    for k, v in state.items():
        for prefix in WRAPPER_PREFIXES:
            k = k.removeprefix(prefix)
        out[k] = v
    if any(k.startswith("model.") for k in out) and not any(k.startswith("blocks.") for k in out):
        out = {k.removeprefix("model."): v for k, v in out.items() if k.startswith("model.")}  # Lightning
    scaling, stage2 = ORIGINAL_LORA_SCALING, obj.get("origin") == EXPORT_ORIGIN
    if any(k.startswith(ORIGINAL_ENCODER_PREFIX) for k in out):
        out, stage2 = from_original_pacx_stage2(out), True
    elif any(k.startswith("cxr_encoder.blocks.") for k in out):  # the original's last_n_blocks ablation: no peft
        out = {k.removeprefix("cxr_encoder."): v for k, v in out.items() if k.startswith("cxr_encoder.")}
        stage2 = True
    elif any(k.startswith("encoder.blocks.") for k in out):  # a pacx Stage-2 training checkpoint
        out = {k.removeprefix("encoder."): v for k, v in out.items() if k.startswith("encoder.")}
        stage2 = True
        if config is not None and config.get("kind") == "pacx":
            scaling = config["lora_alpha"] / config["lora_r"]
    return Checkpoint(str(path), merge_lora_keys(out, scaling), config, stage2)


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
    """Drop an MAE decoder and a classification head (timm `head.*`; `fc_norm` of a global-pool model is kept so a
    mismatch stays visible)."""
    return {k: v for k, v in state.items() if not k.startswith(DECODER_PREFIXES) and not k.startswith("head.")}


def load_encoder_weights(model: VisionTransformer, ckpt: Checkpoint) -> None:
    """The encoder weights of `ckpt` into a plain ViT; `pos_embed` is interpolated to the model's grid."""
    load_strict(model, resize_pos_embed(encoder_only(ckpt.state), model.cfg), ckpt.source)


def load_vit(path: str, preset: str = "base", img_size: int = 0, norm_eps: float | None = None) -> VisionTransformer:
    """A plain ViT: the encoder of the checkpoint at `path` (any layout above), or a random init of `preset` when
    `path` is empty. See `load_backbone`."""
    return load_backbone(path, preset, img_size, norm_eps)[0]


def load_backbone(path: str, preset: str = "base", img_size: int = 0,
                  norm_eps: float | None = None) -> tuple[VisionTransformer, Checkpoint | None]:
    """`load_vit` with the checkpoint it read (None for a random init). The architecture is the file's own when it
    carries one, else `preset`'s; `img_size` (when non-zero) and `norm_eps` (when given) override it. For a foreign
    file two settings follow from the weights themselves: an original Stage-2 checkpoint is read with LayerNorm eps
    1e-5, as the original evaluates it (METHOD.md "Found by running the original"), and a position table that is
    not the fixed sin-cos one (timm's ImageNet ViT) is a learned one, which fine-tuning trains."""
    ckpt = read_checkpoint(path) if path else None
    own = ckpt.vit_config() if ckpt else None
    cfg = with_img_size(own or vit_config(preset), img_size)
    if ckpt is not None and own is None:
        cfg.norm_eps = ORIGINAL_STAGE2_EPS if ckpt.stage2 else cfg.norm_eps
        cfg.learned_pos_embed = not is_sincos_table(ckpt.state.get("pos_embed"))
    if norm_eps is not None:
        cfg.norm_eps = norm_eps
    model = VisionTransformer(cfg)
    if ckpt is not None:
        load_encoder_weights(model, ckpt)
    return model, ckpt


def is_sincos_table(pos_embed: torch.Tensor | None) -> bool:
    """Whether a (1, 1 + G*G, D) position table is MAE's fixed 2-D sin-cos table (to float32 rounding)."""
    if pos_embed is None or pos_embed.ndim != 3:
        return True
    grid = int(round((pos_embed.shape[1] - 1) ** 0.5))
    if grid * grid != pos_embed.shape[1] - 1 or pos_embed.shape[2] % 4:
        return False
    return torch.allclose(pos_embed[0].float(), sincos_2d(pos_embed.shape[2], grid, extra_tokens=1), atol=1e-5)


def load_mae_weights(model: MaskedAutoencoder, ckpt: Checkpoint) -> str:
    """A full MAE (encoder + decoder) loads strictly; an encoder-only file loads into the encoder and leaves the
    decoder at its fresh initialisation. Returns which of the two happened ("full" / "encoder")."""
    state = resize_pos_embed(ckpt.state, model.cfg)
    if any(k.startswith(DECODER_PREFIXES) for k in state):
        if "decoder_pos_embed" in state and state["decoder_pos_embed"].shape != model.decoder_pos_embed.shape:
            state["decoder_pos_embed"] = model.decoder_pos_embed.detach().clone()  # fixed sin-cos: recomputed
        load_strict(model, state, ckpt.source)
        return "full"
    enc = VisionTransformer(model.cfg)
    load_strict(enc, encoder_only(state), ckpt.source)
    model.load_state_dict({**model.state_dict(), **enc.state_dict()}, strict=True)
    return "encoder"


def load_mae(path: str, preset: str = "base", img_size: int = 0) -> MaskedAutoencoder:
    """The full MAE (encoder + decoder) of a Stage-1 checkpoint; its config from the file, else `preset`. An
    encoder-only file is refused: it has no decoder to reconstruct with."""
    ckpt = read_checkpoint(path)
    cfg = ckpt.mae_config() or mae_config(preset)
    with_img_size(cfg.encoder, img_size)
    model = MaskedAutoencoder(cfg)
    if load_mae_weights(model, ckpt) != "full":
        raise PacxError(f"{path}: holds no MAE decoder (encoder only); reconstructions need a full MAE checkpoint "
                        f"(a pacx Stage-1 last.pt or mae_visualize_vit_base.pth)")
    return model


def lab_dae_checkpoint(model: LabDAE, **extra) -> dict:
    """The dict `load_lab_dae` reads: {'model': state_dict, 'config': {'kind': 'lab_dae', ...}, **extra}."""
    return {"model": model.state_dict(), "config": {"kind": "lab_dae", **asdict(model.cfg)}, **extra}


def load_lab_dae(path) -> LabDAE:
    """A LabDAE from pacx's checkpoint, or from an original Lightning one (sizes from the weight shapes)."""
    obj = load(path)
    if not isinstance(obj, dict):
        raise PacxError(f"{path}: expected a lab DAE checkpoint (a dict with 'model'), found {type(obj).__name__}")
    if "model" in obj:
        cfg, state = build_config(LabDAEConfig, obj.get("config", {}), path), obj["model"]
    elif "state_dict" in obj:
        state = {k.removeprefix("model."): v for k, v in obj["state_dict"].items() if k.startswith("model.")}
        if "encoder.0.weight" not in state:
            raise PacxError(f"{path}: 'state_dict' has no 'model.encoder.0.weight'; not a lab DAE checkpoint")
        hidden, two_l = state["encoder.0.weight"].shape
        cfg = LabDAEConfig(n_labs=two_l // 2, hidden=hidden, latent=state["encoder.3.weight"].shape[0])
    else:
        raise PacxError(f"{path}: expected key 'model' (or a Lightning 'state_dict'), found keys {list(obj)}")
    model = LabDAE(cfg)
    load_strict(model, state, path)
    return model


def ecgfounder_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read `12_lead_ECGFounder.pth` (or a bare state dict), strip a `module.` prefix and drop the `dense.*` head."""
    obj = load(path)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PacxError(f"{path}: expected a state dict or a dict with 'state_dict', found {type(obj).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel/DDP
    return {k: v for k, v in state.items() if not k.startswith("dense.")}


def load_ecg_encoder(path, cfg: Net1DConfig | None = None) -> ECGEncoder:
    """The frozen ECGFounder trunk with the weights of `path` (`12_lead_ECGFounder.pth`, or a narrower Net1D such as
    the built-in world's ECG teacher: without `cfg`, the widths are read from the tensor shapes)."""
    state = ecgfounder_state_dict(path)
    model = ECGEncoder(cfg or config_from_state_dict(state))
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise PacxError(f"{path}: not a 12-lead ECGFounder Net1D checkpoint: {len(missing)} missing keys "
                        f"{missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]}")
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise PacxError(f"{path}: key {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)} "
                            "(a checkpoint of another Net1D configuration?)")
    model.load_state_dict(state, strict=True)
    return model
