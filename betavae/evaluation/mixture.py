"""I[z_j; v_k] from the Gaussian posteriors q(z|x) of a set of images, for AAM and MMIG (Dubois et al. 2019):
I = H[z_j] − Σ_v p(v) H[z_j | v_k = v], where q(z_j) and each q(z_j | v_k = v) are the mixtures of the posteriors
of the images (with v_k = v), one-dimensional Gaussian mixtures.

- `quadrature_information`: each mixture's entropy −∫ q log q by the trapezoid rule on a grid of points per latent
  spanning every component's μ ± 8σ; no sampling, so the estimate is deterministic given the images. On the whole
  dataset it is the quantity Chen et al. 2018's whole-dataset estimator samples.
- `published_information`: the estimator as disentangling-vae (Dubois et al.'s code, `evaluate.py`) computes it,
  rewritten here from its description: every image encoded; the "samples" of q(z|x) are the means (the model is in
  eval mode); each entropy scores 10,000 of them, chosen at random, against the mixture of all the images' posteriors
  (those with v_k = v for the conditional), and the [10,000, D] sample matrix is read in memory order as [D, 10,000]
  (a reshape where a transpose was meant), so latent j's entropy is scored at values of other latents.
"""
from __future__ import annotations

import math

import numpy as np
import torch

HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


def _grid(mu: torch.Tensor, std: torch.Tensor, points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """points [G, D] spanning every component's μ ± 8σ per latent, and their spacing [D]."""
    low, high = (mu - 8 * std).min(0).values, (mu + 8 * std).max(0).values
    steps = torch.linspace(0.0, 1.0, points, dtype=torch.float64)[:, None]
    return low[None] + steps * (high - low)[None], (high - low) / (points - 1)


def _entropy(density: torch.Tensor, spacing: torch.Tensor) -> torch.Tensor:
    """−∫ q log q by the trapezoid rule, density [..., G, D] at the grid points; the ends hold no mass (μ ± 8σ)."""
    terms = torch.where(density > 0, -density * torch.log(density.clamp_min(1e-300)), torch.zeros_like(density))
    return terms.sum(-2) * spacing


def quadrature_information(mu: np.ndarray, logvar: np.ndarray, factors: np.ndarray, factor_sizes,
                           points: int = 1024, chunk: int = 1024) -> np.ndarray:
    """I[z_j; v_k] [D, K] in nats from the posteriors (μ, log σ²) [N, D] of N images with factor classes [N, K]:
    every mixture over these images, its entropy by quadrature on `points` grid points per latent. One pass over the
    images: each chunk's densities at the grid points [c, G·D] are summed into the marginal and, by one matrix
    product with the chunk's one-hot factor classes, into every q(z_j | v_k = v) at once."""
    mu = torch.as_tensor(np.asarray(mu), dtype=torch.float64)
    std = torch.exp(0.5 * torch.as_tensor(np.asarray(logvar), dtype=torch.float64))
    factors = torch.as_tensor(np.asarray(factors), dtype=torch.int64)
    count, dims = mu.shape
    grid, spacing = _grid(mu, std, points)
    offsets = torch.tensor([0, *np.cumsum(factor_sizes)[:-1]], dtype=torch.int64) + 1  # row 0: the marginal
    sums = torch.zeros(1 + int(sum(factor_sizes)), points * dims, dtype=torch.float64)
    for start in range(0, count, chunk):  # densities of a chunk's components at the grid points, [c, G, D]
        m, s = mu[start:start + chunk, None].float(), std[start:start + chunk, None].float()
        density = torch.exp(-0.5 * ((grid.float()[None] - m) / s) ** 2 - HALF_LOG_TWO_PI) / s
        rows = torch.cat([torch.zeros(len(m), 1, dtype=torch.int64), factors[start:start + chunk] + offsets], 1)
        indicator = torch.zeros(len(m), len(sums)).scatter_(1, rows, 1.0)  # [c, 1 + ΣV]
        sums += (indicator.T @ density.reshape(len(m), -1)).double()
    counts = torch.zeros(len(sums), dtype=torch.float64)
    counts[0] = count
    for k in range(len(factor_sizes)):
        counts[offsets[k]:offsets[k] + factor_sizes[k]] = torch.bincount(factors[:, k], minlength=factor_sizes[k])
    seen = counts > 0
    entropies = torch.zeros(len(sums), dims, dtype=torch.float64)
    entropies[seen] = _entropy((sums[seen] / counts[seen, None]).reshape(-1, points, dims), spacing)
    information = np.zeros((dims, len(factor_sizes)))
    for k, size in enumerate(factor_sizes):
        block = slice(int(offsets[k]), int(offsets[k]) + size)
        weights = counts[block] / count                                   # p(v_k = v) among these images
        information[:, k] = (entropies[0] - (weights[:, None] * entropies[block]).sum(0)).numpy()
    return information


def _published_entropy(points: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, chunk: int = 20) -> torch.Tensor:
    """−mean_s log (1/N) Σ_n N(points[j, s]; μ_nj, σ²_nj) per latent j: points [D, S], mu/logvar [N, D] → [D]."""
    total = torch.zeros(mu.shape[1], dtype=torch.float64)
    inverse_var = torch.exp(-logvar)
    for start in range(0, points.shape[1], chunk):
        z = points[:, start:start + chunk].T[:, None, :]  # [s, 1, D]
        log_q = -0.5 * ((z - mu[None]) ** 2 * inverse_var[None] + logvar[None]) - HALF_LOG_TWO_PI  # [s, N, D]
        total -= (torch.logsumexp(log_q, dim=1) - math.log(len(mu))).double().sum(0)
    return total / points.shape[1]


def published_information(mu: np.ndarray, logvar: np.ndarray, factor_sizes, seed: int = 0,
                          samples: int = 10_000) -> np.ndarray:
    """I[z_j; v_k] [D, K] as disentangling-vae's `evaluate.py` estimates it (see the module's docstring), from the
    posteriors [N, D] of every image of a complete factor grid in its order (factor k varying slower than k + 1)."""
    generator = torch.Generator().manual_seed(seed)
    mu, logvar = (torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in (mu, logvar))
    count, dims = mu.shape

    def entropy(m: torch.Tensor, lv: torch.Tensor) -> torch.Tensor:
        chosen = torch.randperm(len(m), generator=generator)[:samples]
        return _published_entropy(m[chosen].reshape(dims, -1), m, lv)  # the [S, D] means read as [D, S]

    marginal = entropy(mu, logvar)
    grid_mu, grid_lv = mu.reshape(*factor_sizes, dims), logvar.reshape(*factor_sizes, dims)
    information = np.zeros((dims, len(factor_sizes)))
    for k, size in enumerate(factor_sizes):
        conditional = torch.zeros(dims, dtype=torch.float64)
        for value in range(size):
            m, lv = (a.select(k, value).reshape(-1, dims) for a in (grid_mu, grid_lv))
            conditional += entropy(m, lv) / size
        information[:, k] = (marginal - conditional).numpy()
    return information
