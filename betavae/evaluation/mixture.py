"""I[z_j; v_k] from the Gaussian posteriors q(z|x) of a set of images, for AAM and MMIG (Dubois et al. 2019):
I = H[z_j] − Σ_v p(v) H[z_j | v_k = v], where q(z_j) and each q(z_j | v_k = v) are the mixtures of the posteriors
of the images (those with v_k = v), one-dimensional Gaussian mixtures. One pass over the images evaluates every
mixture's density on a grid of points per latent spanning each component's μ ± 8σ (`Densities`); then

- `quadrature_information`: each entropy −∫ q log q by the trapezoid rule on that grid. No sampling: given the
  images it is deterministic, and over the whole dataset it is the quantity Chen et al. 2018's whole-dataset
  estimator samples. The trapezoid rule on Gaussians is accurate to far below 1e-6 nats once the spacing is below
  the narrowest σ; docs/metrics.md shows the figures moving by under 0.001 from 1,024 to 4,096 points.
- `published_information`: the estimator as disentangling-vae (Dubois et al.'s code, evaluate.py) computes it,
  written here from its description: every image encoded; the "samples" of q(z|x) are the means (the model is in
  eval mode); each entropy is −mean log q over 10,000 of them chosen at random, scored against the mixture of all
  the images' posteriors (those with v_k = v for a conditional); and the [10,000, D] matrix of chosen means is read
  in memory order as [D, 10,000] (a reshape where a transpose was meant), so latent j is scored at the means of
  every latent of 1,000 images. log q is read from the grid by linear interpolation (exactly outside it), which
  differs from evaluating the mixture directly by less than the estimator's own sampling noise (docs/metrics.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


@dataclass
class Densities:
    """Every mixture's density at the grid points: row 0 the marginal q(z_j), then q(z_j | v_k = v) for each factor
    k and value v in order; density [1 + ΣV, G, D], grid [G, D], spacing [D], counts [1 + ΣV] images per mixture."""
    density: torch.Tensor
    grid: torch.Tensor
    spacing: torch.Tensor
    counts: torch.Tensor
    offsets: list[int]            # first row of factor k

    def rows(self, k: int, size: int) -> slice:
        return slice(self.offsets[k], self.offsets[k] + size)


def mixture_densities(mu, logvar, factors, factor_sizes, points: int = 1024, chunk: int = 1024) -> Densities:
    """One pass over the images (μ, log σ² [N, D], factor classes [N, K]): each chunk's Gaussian densities at the
    grid points are added to the marginal and, per factor, to the row of each image's value."""
    mu = torch.as_tensor(np.asarray(mu), dtype=torch.float64)
    std = torch.exp(0.5 * torch.as_tensor(np.asarray(logvar), dtype=torch.float64))
    factors = torch.as_tensor(np.asarray(factors), dtype=torch.int64)
    count, dims = mu.shape
    low, high = (mu - 8 * std).min(0).values, (mu + 8 * std).max(0).values
    grid = low[None] + torch.linspace(0.0, 1.0, points, dtype=torch.float64)[:, None] * (high - low)[None]
    offsets = [1 + int(sum(factor_sizes[:k])) for k in range(len(factor_sizes))]
    total = torch.zeros(1 + int(sum(factor_sizes)), points * dims, dtype=torch.float64)
    grid32 = grid.float()[None]
    for start in range(0, count, chunk):  # N(g; μ, σ²) for the chunk's components at the grid points, in place
        m, s = mu[start:start + chunk, None].float(), std[start:start + chunk, None].float()
        density = (grid32 - m).div_(s).square_().mul_(-0.5).sub_(torch.log(s) + HALF_LOG_TWO_PI).exp_()
        density = density.reshape(len(m), -1)
        part = torch.zeros(total.shape, dtype=torch.float32)
        part[0] = density.sum(0)
        for k, offset in enumerate(offsets):
            part.index_add_(0, factors[start:start + chunk, k] + offset, density)
        total += part
    counts = torch.zeros(len(total), dtype=torch.float64)
    counts[0] = count
    for k, size in enumerate(factor_sizes):
        counts[offsets[k]:offsets[k] + size] = torch.bincount(factors[:, k], minlength=size).double()
    density = (total / counts.clamp_min(1)[:, None]).reshape(len(total), points, dims)
    return Densities(density, grid, (high - low) / (points - 1), counts, offsets)


def _information(entropies: torch.Tensor, densities: Densities, factor_sizes) -> np.ndarray:
    """I [D, K] from the entropy of every mixture [1 + ΣV, D]: H[z_j] − Σ_v p(v) H[z_j | v_k = v]."""
    information = np.zeros((entropies.shape[1], len(factor_sizes)))
    for k, size in enumerate(factor_sizes):
        rows = densities.rows(k, size)
        weights = densities.counts[rows] / densities.counts[0]         # p(v_k = v) among these images
        seen = weights > 0
        information[:, k] = (entropies[0] - (weights[seen, None] * entropies[rows][seen]).sum(0)).numpy()
    return information


def quadrature_information(mu, logvar, factors, factor_sizes, points: int = 1024,
                           densities: Densities | None = None) -> np.ndarray:
    """I[z_j; v_k] [D, K] in nats, every mixture's entropy by the trapezoid rule (the ends of the grid hold none of
    the mass); `densities` from mixture_densities of the same images saves the pass."""
    densities = densities or mixture_densities(mu, logvar, factors, factor_sizes, points)
    q = densities.density
    terms = torch.where(q > 0, -q * torch.log(q.clamp_min(1e-300)), torch.zeros_like(q))
    return _information(terms.sum(1) * densities.spacing, densities, factor_sizes)


def _log_density(row: torch.Tensor, densities: Densities, x: torch.Tensor, j: int, mu, logvar, members) -> torch.Tensor:
    """log q_row(x) for latent j at points x [S]: interpolated on the grid; points outside it evaluated directly
    against the mixture's components (`members`: the rows of mu and logvar that form it)."""
    grid, q = densities.grid[:, j], row[:, j]
    position = ((x - grid[0]) / densities.spacing[j]).clamp(0, len(grid) - 1)
    left = position.floor().long().clamp(max=len(grid) - 2)
    weight = position - left
    value = torch.log(((1 - weight) * q[left] + weight * q[left + 1]).clamp_min(1e-300))
    outside = (x < grid[0]) | (x > grid[-1])
    if outside.any():
        m, lv = mu[members, j], logvar[members, j]
        z = x[outside, None]
        log_q = -0.5 * ((z - m[None]) ** 2 * torch.exp(-lv)[None] + lv[None]) - HALF_LOG_TWO_PI
        value[outside] = torch.logsumexp(log_q, 1) - math.log(len(m))
    return value


def published_information(mu, logvar, factors, factor_sizes, seed: int = 0, samples: int = 10_000,
                          points: int = 4096, densities: Densities | None = None) -> np.ndarray:
    """I[z_j; v_k] [D, K] as disentangling-vae's evaluate.py estimates it (see the module's docstring), from the
    posteriors [N, D] and factor classes [N, K] of every image of the dataset."""
    generator = torch.Generator().manual_seed(seed)
    mu, logvar = (torch.as_tensor(np.asarray(a), dtype=torch.float64) for a in (mu, logvar))
    factors = torch.as_tensor(np.asarray(factors), dtype=torch.int64)
    densities = densities or mixture_densities(mu, logvar, factors, factor_sizes, points)
    dims = mu.shape[1]

    def entropy(row: int, members: torch.Tensor) -> torch.Tensor:
        chosen = members[torch.randperm(len(members), generator=generator)[:samples]]
        scrambled = mu[chosen].float().reshape(dims, -1).double()     # the [S, D] means read as [D, S]
        return torch.stack([-_log_density(densities.density[row], densities, scrambled[j], j, mu, logvar,
                                          members).mean() for j in range(dims)])

    everything = torch.arange(len(mu))
    entropies = torch.zeros(len(densities.counts), dims, dtype=torch.float64)
    entropies[0] = entropy(0, everything)
    for k, size in enumerate(factor_sizes):
        for value in range(size):
            members = everything[factors[:, k] == value]
            if len(members):
                entropies[densities.offsets[k] + value] = entropy(densities.offsets[k] + value, members)
    return _information(entropies, densities, factor_sizes)
