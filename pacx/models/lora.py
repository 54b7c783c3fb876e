"""Low-rank adapters (LoRA) for the Stage-2 CXR encoder: inject, freeze, merge, export.

Implements METHOD.md "Stage 2" (CXR encoder): LoRA with r 8, alpha 16 (scaling alpha / r = 2), dropout 0.1 on
`attn.qkv`, `mlp.fc1` and `mlp.fc2` of every encoder block; only the adapters and the final LayerNorm `norm` train
(about 1.03 M parameters for ViT-B); export merges the adapters into the weights, giving a plain ViT.
Follows Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models" (sec. 4.1) and the arithmetic of
huggingface/peft `tuners/lora/layer.py` (`Linear`: A Kaiming-uniform a=sqrt(5), B zeros, dropout on the input of
A, merge W += scaling * B @ A), which the reference PaCX-MAE code (Lyce24/PACX-MAE `Modules/pacx_lit.py`) uses.

Parameter names. `inject_lora` replaces each matched `nn.Linear` at `<name>` by a `LoRALinear`, so its keys become
    <name>.base_layer.weight   (out, in)   the frozen pretrained weight
    <name>.base_layer.bias     (out,)
    <name>.lora_A              (r, in)
    <name>.lora_B              (out, r)
e.g. `blocks.0.attn.qkv.lora_A` (8, 768) and `blocks.0.attn.qkv.lora_B` (2304, 8) for ViT-B. `merge_lora` turns
them back into `<name>.weight` / `<name>.bias`, the original ViT keys.

Original PaCX-MAE Stage-2 checkpoints (Lightning, peft adapter "default") map onto this layout by
`from_original_pacx_stage2`:
    cxr_encoder.base_model.model.<key>                     -> <key>              (every encoder key)
    cxr_encoder.base_model.model.<name>.lora_A.default.weight -> <name>.lora_A
    cxr_encoder.base_model.model.<name>.lora_B.default.weight -> <name>.lora_B
(`<name>.base_layer.*` keeps its name.) Keys outside the encoder (heads, `loss_module.logit_scale`) are left to
`pacx.models.heads.heads_from_original_pacx`.

Notation: B = batch, r = rank, I = in features, O = out features.
"""
import copy
import fnmatch
import math

import torch
import torch.nn as nn

DEFAULT_PATTERNS = ("blocks.*.attn.qkv", "blocks.*.mlp.fc1", "blocks.*.mlp.fc2")
ORIGINAL_ENCODER_PREFIX = "cxr_encoder.base_model.model."


class LoRALinear(nn.Module):
    """y = base(x) + B(A(dropout(x))) * alpha / r, with the base layer frozen by `mark_trainable`."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16, dropout: float = 0.1):
        super().__init__()
        if r <= 0:
            raise ValueError(f"LoRALinear: rank r must be positive, got {r}")
        self.base_layer = base
        self.r = r
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout)
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=w.device, dtype=w.dtype))
        # As peft: A like an nn.Linear weight of shape (r, I); B zero, so at start the layer *is* the base layer.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling  # (O, I)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.merged:  # the update already sits in base_layer.weight
            return y
        # Two thin matmuls (I -> r -> O) instead of materialising the (O, I) update.
        return y + (self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight (W += scaling * B @ A) for fast inference; calling it twice changes
        nothing. The flag is not saved in the state dict: export with `merge_lora`, not a merged layer's weights."""
        if not self.merged:
            self.base_layer.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo `merge` (exact up to float rounding); calling it on an unmerged layer changes nothing."""
        if self.merged:
            self.base_layer.weight -= self.delta_weight()
            self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, scaling={self.scaling}, merged={self.merged}"


def inject_lora(model: nn.Module, patterns=DEFAULT_PATTERNS, r: int = 8, alpha: float = 16,
                dropout: float = 0.1) -> list[str]:
    """Replace every `nn.Linear` whose full module name matches one of `patterns` (fnmatch, whole name) by a
    `LoRALinear`, in place. Returns the adapted names.

    Whole-name matching is why `blocks.*.attn.qkv` adapts the encoder of a `MaskedAutoencoder` but never its
    `decoder_blocks.*.attn.qkv` (peft's suffix matching on "qkv" would catch both).
    """
    names = [n for n, _ in model.named_modules() if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not names:
        raise ValueError(f"inject_lora: no module name matches {list(patterns)} in {type(model).__name__}")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        module = getattr(parent, child)
        if isinstance(module, LoRALinear):
            raise ValueError(f"inject_lora: module '{name}' already has LoRA adapters")
        if not isinstance(module, nn.Linear):
            raise ValueError(f"inject_lora: module '{name}' matched {list(patterns)}: expected nn.Linear, "
                             f"found {type(module).__name__}")
        lora = LoRALinear(module, r=r, alpha=alpha, dropout=dropout)
        lora.train(module.training)  # a new module starts in train mode; keep the model's mode (dropout off in eval)
        setattr(parent, child, lora)
    return names


def mark_trainable(model: nn.Module, strategy: str = "lora", n: int = 4) -> int:
    """Set `requires_grad` for Stage 2 and return the number of trainable parameters.

    "lora":   only the LoRA matrices and the final encoder LayerNorm `norm.*` (as the reference's peft setup).
    "last_n": the last `n` of `model.blocks` and `norm.*` (the reference's `last_n_blocks` strategy).
    Everything else (patch embedding, CLS token, position table, earlier blocks) is frozen.
    """
    model.requires_grad_(False)
    model.norm.requires_grad_(True)
    if strategy == "lora":
        adapters = [m for m in model.modules() if isinstance(m, LoRALinear)]
        if not adapters:
            raise ValueError("mark_trainable: strategy 'lora' but the model has no LoRALinear; call inject_lora first")
        for m in adapters:
            m.lora_A.requires_grad_(True)
            m.lora_B.requires_grad_(True)
    elif strategy == "last_n":
        depth = len(model.blocks)
        if not 0 <= n <= depth:
            raise ValueError(f"mark_trainable: n must be in [0, {depth}] for a {depth}-block model, got {n}")
        for blk in model.blocks[depth - n:]:
            blk.requires_grad_(True)
    else:
        raise ValueError(f"mark_trainable: strategy must be 'lora' or 'last_n', got '{strategy}'")
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """A copy of `model` with every `LoRALinear` replaced by a plain `nn.Linear` holding W + scaling * B @ A.

    The copy's state dict has exactly the keys of the model before `inject_lora`, so it loads with `strict=True`
    into `pacx.models.vit.VisionTransformer` (and timm). `model` itself is left untouched.
    """
    out = copy.deepcopy(model)
    names = [n for n, m in out.named_modules() if isinstance(m, LoRALinear)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = out.get_submodule(parent_name)
        lora = getattr(parent, child)
        base = lora.base_layer
        weight = base.weight if lora.merged else base.weight + lora.delta_weight()
        # skip_init: no random initialisation, so exporting never advances the global RNG (a resumed run's dropout
        # stream must not depend on how often the uninterrupted run exported).
        plain = torch.nn.utils.skip_init(nn.Linear, base.in_features, base.out_features, bias=base.bias is not None,
                                         device=base.weight.device, dtype=base.weight.dtype)
        plain.weight.copy_(weight)
        if base.bias is not None:
            plain.bias.copy_(base.bias)
        plain.requires_grad_(base.weight.requires_grad)
        setattr(parent, child, plain)
    return out


def from_original_pacx_stage2(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the `state_dict` of an original PaCX-MAE Stage-2 Lightning checkpoint (peft LoRA inside
    `cxr_encoder`) to the encoder keys of a pacx ViT after `inject_lora` (see the module docstring)."""
    out = {}
    for key, value in state_dict.items():
        if not key.startswith(ORIGINAL_ENCODER_PREFIX):
            continue
        name = key[len(ORIGINAL_ENCODER_PREFIX):]
        for part in ("lora_A", "lora_B"):
            tag = f".{part}."
            if tag in name:
                module, _, rest = name.partition(tag)
                if rest != "default.weight":
                    raise ValueError(f"from_original_pacx_stage2: key '{key}': expected '{module}{tag}default.weight' "
                                     f"(peft adapter 'default'), found '...{tag}{rest}'")
                name = f"{module}.{part}"
        out[name] = value
    if not out:
        sample = list(state_dict)[:3]
        raise ValueError(f"from_original_pacx_stage2: no key starts with '{ORIGINAL_ENCODER_PREFIX}' "
                         f"(a Stage-2 checkpoint's state_dict); found e.g. {sample}")
    return out
