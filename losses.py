"""Reconstruction likelihoods, the KL to the prior, weight schedules and the objectives built from them.

Reduction, stated once: every term is summed over pixels and latent dimensions and averaged over the batch,
so a loss is "nats per image".
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def reconstruction_nll(x: torch.Tensor, x_logits: torch.Tensor, kind: str, std: float = 0.7071) -> torch.Tensor:
    """−log p(x|z) per image, averaged over the batch.

    bernoulli: binary cross-entropy on logits (numerically stable; x in [0, 1]).
    gaussian:  fixed-variance N(sigmoid(logits), std²) without its constant; std = 1/√2 gives the summed squared error.
    """
    if kind == "bernoulli":
        nll = F.binary_cross_entropy_with_logits(x_logits, x, reduction="sum")
    elif kind == "gaussian":
        nll = F.mse_loss(torch.sigmoid(x_logits), x, reduction="sum") / (2 * std ** 2)
    else:
        raise ValueError(f"unknown reconstruction likelihood {kind!r}")
    return nll / x.shape[0]


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) per latent dimension, averaged over the batch: [D].

    Kingma & Welling 2014, appendix B: −½ Σ (1 + log σ² − μ² − σ²).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean(dim=0)


def linear_schedule(step: int, start: float, end: float, steps: int) -> float:
    """`start` at step 0 moving linearly to `end` at `steps` (either direction), then held; constant if steps == 0."""
    if steps <= 0 or step >= steps:
        return end
    return start + (end - start) * step / steps


def beta_at(step: int, params) -> float:
    start = params.beta if params.beta_start is None else params.beta_start
    return linear_schedule(step, start, params.beta, params.anneal_steps)


def beta_vae(x, x_logits, mu, logvar, z, step: int, params) -> dict[str, torch.Tensor]:
    """Higgins et al. 2017, Eq. (4): −E_q[log p(x|z)] + β·KL(q(z|x) ‖ p(z)), β optionally annealed."""
    recon = reconstruction_nll(x, x_logits, params.recon, params.recon_std)
    kl_per_dim = kl_normal(mu, logvar)
    kl = kl_per_dim.sum()
    beta = beta_at(step, params)
    return {"loss": recon + beta * kl, "recon": recon, "kl": kl, "beta": torch.tensor(beta),
            "kl_per_dim": kl_per_dim}


def vae(x, x_logits, mu, logvar, z, step: int, params) -> dict[str, torch.Tensor]:
    """Kingma & Welling 2014: the negative ELBO, i.e. beta_vae with β = 1 whatever params.beta says."""
    recon = reconstruction_nll(x, x_logits, params.recon, params.recon_std)
    kl_per_dim = kl_normal(mu, logvar)
    kl = kl_per_dim.sum()
    return {"loss": recon + kl, "recon": recon, "kl": kl, "beta": torch.tensor(1.0), "kl_per_dim": kl_per_dim}


# objective name → function(x, x_logits, mu, logvar, z, step, params) → dict of named terms with "loss".
OBJECTIVES = {"betaH": beta_vae, "vae": vae}
