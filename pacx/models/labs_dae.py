"""The mask-aware denoising autoencoder that turns 50 lab percentiles into the 256-d lab target (Stage 1b).

Implements METHOD.md "Stage 1b". Follows Lyce24/PACX-MAE `Models/labs_dae.py` (`LabsDenoisingAE`, and
`LabsDAELightning._corrupt` / `_masked_mse` / `configure_optimizers`) and its `labs_features_extraction` notebook;
the module names `encoder` / `decoder` (nn.Sequential) are the reference's, so its weights load after stripping
Lightning's `model.` prefix.

The encoder sees the percentiles and the observed mask side by side (1 = observed, 0 = missing), so "0.0" as a
value and "not measured" stay distinguishable. Training hides 15% of the observed labs and asks the decoder to
reconstruct every originally observed lab: the latent must capture how labs co-vary.

Notation: B = batch, L = labs (50), H = hidden width (512), Z = latent (256).
"""
from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class LabDAEConfig:
    n_labs: int = 50
    hidden: int = 512
    latent: int = 256
    drop_prob: float = 0.15  # fraction of observed labs hidden per training forward


def masked_mse(x_hat: torch.Tensor, x: torch.Tensor, m: torch.Tensor, denom: torch.Tensor | None = None):
    """sum((x_hat - x)^2 * m) / sum(m): mean squared error over the observed entries only.

    The denominator is clamped to >= 1 so a batch with nothing observed gives 0, not 0/0. The reference adds 1e-6
    instead; since sum(m) is a whole number, the two agree to a relative 1e-6 whenever anything is observed.
    `denom` replaces sum(m) when this batch is a part (a rank's share, a micro-batch) of a larger one, so that the
    parts' losses add up to the loss of the whole (train_mae.py).
    """
    return ((x_hat - x) ** 2 * m).sum() / (m.sum() if denom is None else denom).clamp_min(1.0)


class LabDAE(nn.Module):
    def __init__(self, cfg: LabDAEConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or LabDAEConfig()
        self.encoder = nn.Sequential(
            nn.Linear(2 * cfg.n_labs, cfg.hidden),
            nn.LayerNorm(cfg.hidden),
            nn.GELU(),
            nn.Linear(cfg.hidden, cfg.latent),  # no activation: the latent is the lab target as is
        )
        self.decoder = nn.Sequential(
            nn.Linear(cfg.latent, cfg.hidden),
            nn.GELU(),
            nn.Linear(cfg.hidden, cfg.n_labs),
            nn.Sigmoid(),  # percentiles live in [0, 1]
        )

    def corrupt(self, x: torch.Tensor, m: torch.Tensor, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None):
        """Zero the missing entries, then hide a random drop_prob of the observed ones (x and m both set to 0).

        One uniform draw of shape m, as the reference's `torch.rand_like(m)`, so a seed gives the same mask;
        `noise` (B, L) in [0, 1) replaces that draw (the training script draws it per sample, like the MAE's).
        """
        m = m.to(x.dtype)
        x = x * m  # the mean-imputed placeholders at missing labs must not leak into training
        u = torch.rand(m.shape, generator=generator, device=m.device) if noise is None else noise  # (B, L)
        keep = 1.0 - ((u < self.cfg.drop_prob) & (m > 0.5)).to(x.dtype)  # drop only observed entries
        return x * keep, m * keep

    def forward(self, x: torch.Tensor, m: torch.Tensor, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None, denom: torch.Tensor | None = None):
        """Training forward: corrupt, reconstruct, score on every originally observed lab (the mean over them, or
        their sum over `denom`, see `masked_mse`). Returns (loss, x_hat)."""
        m = m.to(x.dtype)
        x_in, m_in = self.corrupt(x, m, generator, noise)
        x_hat = self.decoder(self.encoder(torch.cat([x_in, m_in], dim=1)))  # (B, 2L) -> (B, Z) -> (B, L)
        return masked_mse(x_hat, x, m, denom), x_hat

    def encode(self, x: torch.Tensor, m: torch.Tensor, zero_missing: bool = False) -> torch.Tensor:
        """The (B, Z) lab feature of uncorrupted input.

        Quirk (METHOD.md "Quirks", kept by default): the reference extracts features from the mean-imputed
        percentiles as stored, without zeroing the missing entries, although training always saw zeros there.
        zero_missing=True feeds x * m, matching what the encoder was trained on.
        """
        m = m.to(x.dtype)
        if zero_missing:
            x = x * m
        return self.encoder(torch.cat([x, m], dim=1))  # (B, 2L) -> (B, Z)
