"""The Stage-2 distillation heads and the combined PaCX-MAE objective (the heads are dropped after training).

Implements METHOD.md "Stage 2" (heads, total loss, validation diagnostics) following the reference PaCX-MAE
(Lyce24/PACX-MAE `Modules/pacx_lit.py`: `ProjectionHead`, `CLIPRegressionLoss`, the validation step; weights 0.5 / 1.0
from `Stage2_PACX.py`). Five heads, each Dropout(0.2) -> Linear (trunc-normal std 0.02, bias 0) -> LayerNorm:
    cxr_to_shared 768 -> 256, ecg_to_shared 1024 -> 256, labs_to_shared 256 -> 256   (contrastive, shared space)
    cxr_to_ecg 768 -> 1024, cxr_to_labs 768 -> 256                                  (regression of the targets)
    L_C = mean(InfoNCE(cxr, ecg), InfoNCE(cxr, labs))   L_R = mean(1 - cos(cxr_to_ecg, ecg), 1 - cos(cxr_to_labs, labs))
    L   = 0.5 * L_C + 1.0 * L_R
Module names match the reference checkpoint (`cxr_to_shared.mlp.1.weight`, ...); its `loss_module.logit_scale`
becomes `temperature.logit_scale` (`heads_from_original_pacx`).

Quirk kept by default (METHOD.md "Quirks"): every reference head starts with Dropout(0.2), so the *frozen* ECG and lab
embeddings are dropped out before `ecg_to_shared` / `labs_to_shared`; `target_dropout=False` removes that dropout.

Notation: B = batch, E = ECG embedding (1024), Lb = lab embedding (256), S = shared width (256), C = CXR width (768).
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pacx.models.losses import LearnableTemperature, cosine_regression_loss, info_nce

HEAD_NAMES = ("cxr_to_shared", "ecg_to_shared", "labs_to_shared", "cxr_to_ecg", "cxr_to_labs")


@dataclass
class HeadsConfig:
    cxr_dim: int = 768
    ecg_dim: int = 1024
    labs_dim: int = 256
    shared_dim: int = 256
    dropout: float = 0.2
    target_dropout: bool = True  # quirk: dropout also on the frozen ECG / lab embeddings (see the module docstring)
    use_ecg: bool = True
    use_labs: bool = True
    contrastive_weight: float = 0.5
    regression_weight: float = 1.0
    label_smoothing: float = 0.02
    init_temperature: float = 0.07


class ProjectionHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, dropout: float):
        super().__init__()
        self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim))
        nn.init.trunc_normal_(self.mlp[1].weight, std=0.02)
        nn.init.zeros_(self.mlp[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class DistillHeads(nn.Module):
    """The five heads plus the learnable temperature; `forward` returns (total loss, dict of detached parts).

    Only the heads an ablation uses are built (no unused parameters under DDP): `use_ecg` / `use_labs` drop a
    modality, a zero `contrastive_weight` / `regression_weight` drops a loss family.
    """

    def __init__(self, cfg: HeadsConfig):
        super().__init__()
        if not (cfg.use_ecg or cfg.use_labs):
            raise ValueError("HeadsConfig: at least one of use_ecg / use_labs must be True")
        wc, wr = cfg.contrastive_weight, cfg.regression_weight
        if wc < 0 or wr < 0 or wc + wr == 0:
            raise ValueError(f"HeadsConfig: weights must be >= 0 and not both 0, found contrastive "
                             f"{wc}, regression {wr}")
        self.cfg = cfg
        self.modalities = [m for m, on in (("ecg", cfg.use_ecg), ("labs", cfg.use_labs)) if on]
        self.contrastive, self.regression = wc > 0, wr > 0
        # Quirk (METHOD.md "Quirks"): the reference's heads all start with Dropout, the frozen targets' heads too.
        target_p = cfg.dropout if cfg.target_dropout else 0.0
        C, S, E, Lb = cfg.cxr_dim, cfg.shared_dim, cfg.ecg_dim, cfg.labs_dim
        ecg_c, labs_c = self.contrastive and cfg.use_ecg, self.contrastive and cfg.use_labs
        ecg_r, labs_r = self.regression and cfg.use_ecg, self.regression and cfg.use_labs
        self.cxr_to_shared = ProjectionHead(C, S, cfg.dropout) if self.contrastive else None
        self.ecg_to_shared = ProjectionHead(E, S, target_p) if ecg_c else None
        self.labs_to_shared = ProjectionHead(Lb, S, target_p) if labs_c else None
        self.cxr_to_ecg = ProjectionHead(C, E, cfg.dropout) if ecg_r else None
        self.cxr_to_labs = ProjectionHead(C, Lb, cfg.dropout) if labs_r else None
        self.temperature = LearnableTemperature(cfg.init_temperature) if self.contrastive else None

    def _check_target(self, name: str, t: torch.Tensor | None, dim: int, batch: int) -> None:
        if t is None:
            raise ValueError(f"DistillHeads: use_{name}=True but no {name} embedding was given")
        if tuple(t.shape) != (batch, dim):
            raise ValueError(f"DistillHeads: {name} embedding must be ({batch}, {dim}), found {tuple(t.shape)}")

    def project(self, cxr: torch.Tensor, ecg: torch.Tensor | None = None,
                labs: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Head outputs: `cxr_shared`, `{m}_shared` (B, S) and `{m}_pred` (B, E or Lb) for the enabled m."""
        targets = {"ecg": ecg, "labs": labs}
        dims = {"ecg": self.cfg.ecg_dim, "labs": self.cfg.labs_dim}
        out = {}
        if self.contrastive:
            out["cxr_shared"] = self.cxr_to_shared(cxr)  # (B, S)
        for m in self.modalities:
            self._check_target(m, targets[m], dims[m], cxr.shape[0])
            if self.contrastive:
                out[f"{m}_shared"] = getattr(self, f"{m}_to_shared")(targets[m].detach())  # (B, S)
            if self.regression:
                out[f"{m}_pred"] = getattr(self, f"cxr_to_{m}")(cxr)  # (B, E) / (B, Lb)
        return out

    def compute_loss(self, out: dict[str, torch.Tensor], ecg: torch.Tensor | None = None,
                     labs: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L = w_c * mean_m InfoNCE(cxr, m) + w_r * mean_m (1 - cos(cxr_to_m, m)) from `project`'s outputs."""
        targets = {"ecg": ecg, "labs": labs}
        parts = {}
        total = 0.0
        if self.contrastive:
            scale = self.temperature()
            pair = [info_nce(out["cxr_shared"], out[f"{m}_shared"], scale, self.cfg.label_smoothing)
                    for m in self.modalities]
            parts.update({f"contrastive_{m}": x.detach() for m, x in zip(self.modalities, pair)})
            loss_c = torch.stack(pair).mean()
            parts["contrastive"] = loss_c.detach()
            parts["logit_scale"] = scale.detach()
            total = total + self.cfg.contrastive_weight * loss_c
        if self.regression:
            reg = [cosine_regression_loss(out[f"{m}_pred"], targets[m]) for m in self.modalities]
            parts.update({f"regression_{m}": x.detach() for m, x in zip(self.modalities, reg)})
            loss_r = torch.stack(reg).mean()
            parts["regression"] = loss_r.detach()
            total = total + self.cfg.regression_weight * loss_r
        parts["total"] = total.detach()
        return total, parts

    def forward(self, cxr: torch.Tensor, ecg: torch.Tensor | None = None,
                labs: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """cxr (B, C) CLS features; ecg (B, E), labs (B, Lb) frozen target embeddings."""
        return self.compute_loss(self.project(cxr, ecg, labs), ecg, labs)


@torch.no_grad()
def retrieval_metrics(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> dict[str, torch.Tensor]:
    """In-batch retrieval a -> b (row i's match is row i): top-1 / top-5 accuracy, mean cosine of the positive
    pairs and of the B*(B-1) negative pairs (0 when B = 1, as the reference), to spot collapse or shortcuts."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"retrieval_metrics: a has {a.shape[0]} rows but b has {b.shape[0]}")
    sim = F.normalize(a, dim=-1, eps=eps) @ F.normalize(b, dim=-1, eps=eps).t()  # (B, B)
    B = sim.shape[0]
    idx = torch.arange(B, device=sim.device)
    k = min(5, B)
    pos = sim.diagonal()
    neg = (sim.sum() - pos.sum()) / (B * (B - 1)) if B > 1 else sim.new_zeros(())
    return {
        "top1": (sim.argmax(dim=1) == idx).float().mean(),
        "top5": (sim.topk(k, dim=1).indices == idx[:, None]).any(dim=1).float().mean(),
        "pos_sim": pos.mean(),
        "neg_sim": neg,
    }


def heads_from_original_pacx(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pick the heads and the temperature out of an original PaCX-MAE Stage-2 checkpoint's `state_dict`:
    `<head>.mlp.{1,2}.*` keep their names, `loss_module.logit_scale` -> `temperature.logit_scale`."""
    out = {k: v for k, v in state_dict.items() if k.split(".")[0] in HEAD_NAMES}
    if "loss_module.logit_scale" in state_dict:
        out["temperature.logit_scale"] = state_dict["loss_module.logit_scale"]
    if not out:
        raise ValueError(f"heads_from_original_pacx: no key starts with one of {HEAD_NAMES} or is "
                         f"'loss_module.logit_scale'; found e.g. {list(state_dict)[:3]}")
    return out
