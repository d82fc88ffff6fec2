"""Information-based scores: MIG (Chen et al. 2018, disentanglement_lib's histogram estimate), and AAM and MMIG
(Dubois et al., the poster's Eq. 2-3) from histograms or from the Gaussian posteriors q(z|x)."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from betavae.evaluation import protocol
from betavae.evaluation.protocol import HISTOGRAM_BINS
from betavae.evaluation.sampling import GridSampler

# ---------------------------------------------------------------- information from histograms

def histogram_discretize(codes: np.ndarray, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """disentanglement_lib's `_histogram_discretize`: each latent into `bins` equal-width bins: [N, D] -> int [N, D]."""
    codes = np.asarray(codes, dtype=np.float64)
    out = np.zeros(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        out[:, j] = np.digitize(codes[:, j], np.histogram(codes[:, j], bins)[1][:-1])
    return out


def _mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information (nats) of two integer vectors, as sklearn's mutual_info_score."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    joint = np.bincount(a * (b.max() + 1) + b, minlength=(a.max() + 1) * (b.max() + 1)).reshape(a.max() + 1, -1)
    joint = joint / len(a)
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nonzero = joint > 0
    return max(float(np.sum(joint[nonzero] * np.log(joint[nonzero] / outer[nonzero]))), 0.0)


def mutual_information_matrix(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """I(z_j; v_k) for every latent j and factor k: [D, K] in nats."""
    return np.array([[_mutual_information(discrete_codes[:, j], factors[:, k]) for k in range(factors.shape[1])]
                     for j in range(discrete_codes.shape[1])])


def _entropies(factors: np.ndarray) -> np.ndarray:
    return np.array([_mutual_information(factors[:, k], factors[:, k]) for k in range(factors.shape[1])])


def _sorted_information(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """I(z_j; v_k) sorted over latents, largest first: [D, K]."""
    return -np.sort(-mutual_information_matrix(histogram_discretize(codes), np.asarray(factors)), axis=0)


# ---------------------------------------------------------------- metrics on fixed arrays

def mig(codes: np.ndarray, factors: np.ndarray) -> float:
    """Mutual information gap as disentanglement_lib computes it (`mig.py`, Locatello et al. 2019).

    20 equal-width bins per latent, plug-in mutual information with each factor, (largest − second) / H(v_k),
    mean over factors; 10,000 points by protocol. Not Chen et al. 2018's MIG, which estimates I from q(z|x)
    over the whole dataset: the two give different numbers.
    """
    information = _sorted_information(codes, factors)
    entropy = _entropies(np.asarray(factors))
    keep = entropy > 0  # a factor constant in the sample carries no information to gap
    return float(np.mean((information[0, keep] - information[1, keep]) / entropy[keep]))


def aam_from_information(information: np.ndarray) -> float:
    """Axis-alignment metric, Eq. (2) of Dubois et al. 2019 (poster), from I[z_j; v_k] [D, K]: per factor,
    max(I_(1) − Σ_{others} I, 0) / I_(1), mean over factors (a factor no latent informs scores 0)."""
    information = -np.sort(-np.maximum(np.asarray(information, dtype=np.float64), 0.0), axis=0)
    top = information[0]
    numerator = np.maximum(top - information[1:].sum(axis=0), 0.0)
    return float(np.mean(np.divide(numerator, top, out=np.zeros_like(top), where=top > 0)))


def aam_histogram(codes: np.ndarray, factors: np.ndarray) -> float:
    """AAM (Eq. 2 of the poster) with I estimated as for MIG (20 histogram bins on μ), not with the poster's
    q(z|x) estimator (`aam`), so the poster's Table 1 values are not directly comparable."""
    return aam_from_information(mutual_information_matrix(histogram_discretize(codes), np.asarray(factors)))


def mmig_from_information(information: np.ndarray, factors: np.ndarray) -> float:
    """Modified MIG, Eq. (3) of Dubois et al. 2019, from I[z_j; v_k] [D, K]:
    (I_(1) − I_(2)) / (H(v_k) − max_{k'≠k} I(v_k; v_k')), mean over factors; the denominator discounts what
    other factors already tell about v_k (both from the factor classes `factors` [N, K])."""
    factors = np.asarray(factors)
    information = -np.sort(-np.asarray(information, dtype=np.float64), axis=0)
    between = mutual_information_matrix(factors, factors)
    np.fill_diagonal(between, 0.0)
    denominator = _entropies(factors) - (between.max(axis=0) if factors.shape[1] > 1 else 0.0)
    keep = denominator > 0
    return float(np.mean((information[0, keep] - information[1, keep]) / denominator[keep]))


def mmig_histogram(codes: np.ndarray, factors: np.ndarray) -> float:
    """MMIG (Eq. 3 of the poster) with I from 20 histogram bins on μ as in `mig`; the poster's own estimator
    is `mmig`."""
    return mmig_from_information(mutual_information_matrix(histogram_discretize(codes), np.asarray(factors)), factors)


# ---------------------------------------------------------------- the poster's estimator from q(z|x)

def _gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * (np.log(2 * np.pi) + logvar + (z - mu) ** 2 * torch.exp(-logvar))


def posterior_entropy(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """H[z_j] of the mixture q(z_j) = (1/N) Σ_n N(z_j; μ_j(x_n), σ_j²(x_n)) for every latent j, as Chen et al.
    2018's `estimate_entropies` (beta-tcvae, disentanglement_metrics.py): −mean over the draws z [S, D] (each from
    q(z|x) of one of the images) of log (1/N) Σ_n q(z_j|x_n), the sum by logsumexp. mu, logvar: [N, D]. Returns [D]."""
    total = torch.zeros(mu.shape[1], dtype=torch.float64)
    for part in z.split(chunk):  # [s, D] against [N, D] → [s, N, D], summed over N in log space
        log_q = _gaussian_log_density(part[:, None, :], mu[None], logvar[None])
        total -= (torch.logsumexp(log_q, dim=1) - np.log(len(mu))).double().sum(0)
    return total / len(z)


def posterior_information(posterior: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                          factor_sizes: Sequence[int], seed: int = 0, marginal: int | None = None,
                          draws: int | None = None, per_value: int | None = None, sampler=None) -> np.ndarray:
    """I[z_j; v_k] = H[z_j] − H[z_j | v_k] for every latent j and factor k ([D, K], nats), the estimator of the
    poster (Dubois et al. 2019: I = E_q(z_j,v_k)[log Σ_n q(z_j|x_n) p(x_n|v_k)] + H[z_j], "estimated using empirical
    distributions and stratified sampling over p(v_k) and p(x_n)"), computed as Chen et al. 2018's MIG code does.

    `posterior` maps factor classes [N, K] to the Gaussian posterior (μ, log σ²) [N, D] of their images.
    H[z_j]: q(z_j) is the mixture of the posteriors of `marginal` images with uniform factors (10,000 by default),
    scored at `draws` z drawn from q(z|x) of the first of them (2,000). H[z_j | v_k]: for each value v of factor k,
    `per_value` images (256) with v_k = v and the other factors uniform form q(z_j | v_k = v) and each gives one
    draw; the entropies are averaged over the values (p(v_k) uniform, as dSprites). Chen et al. use every dSprites
    image; these counts are sized for a CPU (see SAMPLES) and bias I a little upwards (a smaller stratum
    underestimates its entropy). Deterministic given `seed`. `sampler` (evaluation/sampling.py) draws the images:
    by default uniformly over the grid of `factor_sizes`; on an incomplete grid, strata of images sharing each value.
    """
    marginal = marginal or protocol.SAMPLES.get("poster_marginal", protocol.POSTER_DEFAULTS["poster_marginal"])
    draws = min(draws or protocol.SAMPLES.get("poster_entropy_draws", protocol.POSTER_DEFAULTS["poster_entropy_draws"]), marginal)
    per_value = per_value or protocol.SAMPLES.get("poster_per_value", protocol.POSTER_DEFAULTS["poster_per_value"])
    rng, sampler = protocol.rng(seed, "poster_information"), sampler or GridSampler(factor_sizes)
    generator = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))

    def draw(factors: np.ndarray):
        mu, logvar = (torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in posterior(factors))
        return mu, logvar, mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator)

    mu, logvar, z = draw(sampler.sample(rng, marginal))
    entropy = posterior_entropy(z[:draws], mu, logvar)  # [D]
    information = np.zeros((mu.shape[1], sampler.count))
    for k in range(sampler.count):
        keys, _ = sampler.strata(rng, k, per_value)  # per_value images for each value of factor k, value-major
        mu, logvar, z = draw(keys)
        conditional = torch.stack([posterior_entropy(z_v, mu_v, lv_v) for z_v, mu_v, lv_v in
                                   zip(z.split(per_value), mu.split(per_value), logvar.split(per_value))]).mean(0)
        information[:, k] = (entropy - conditional).numpy()
    return information


def aam(posterior, factor_sizes: Sequence[int], seed: int = 0, **counts) -> float:
    """AAM (Eq. 2 of the poster) with the poster's estimator of I from q(z|x) (`posterior_information`)."""
    return aam_from_information(posterior_information(posterior, factor_sizes, seed, **counts))


def mmig(posterior, factor_sizes: Sequence[int], seed: int = 0, **counts) -> float:
    """MMIG (Eq. 3 of the poster) with the poster's estimator of I from q(z|x) (`posterior_information`);
    H(v_k) and I(v_k; v_k') of the uniform, independent factors are computed exactly (log |V_k| and 0)."""
    return mmig_uniform(posterior_information(posterior, factor_sizes, seed, **counts), factor_sizes)


def mmig_uniform(information: np.ndarray, factor_sizes: Sequence[int]) -> float:
    """Eq. 3 of the poster from I [D, K] for uniform, independent factors: H(v_k) = log |V_k|, I(v_k; v_k') = 0."""
    information = -np.sort(-np.asarray(information, dtype=np.float64), axis=0)
    denominator = np.log(np.asarray(factor_sizes, dtype=np.float64))
    keep = denominator > 0
    return float(np.mean((information[0, keep] - information[1, keep]) / denominator[keep]))
