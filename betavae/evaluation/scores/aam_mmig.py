"""AAM and MMIG, the axis-alignment metric and modified MIG of Dubois et al. 2019 (poster "Understanding
disentangling in VAE", Eq. 2-3), with I[z_j; v_k] from the Gaussian posteriors q(z|x) of uniformly drawn images, each
mixture's entropy by quadrature (evaluation/mixture.py), or, with `aam_estimator=published`, as Dubois et al.'s code
computes it; also the same equations on MIG's histogram estimate, and the stratified-sampling estimator this
repository used before (`posterior_information`), kept for the convergence study (evaluation/convergence.py)."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from betavae.evaluation import protocol
from betavae.evaluation.context import Context, Metric, Skip
from betavae.evaluation.discretise import entropies, histogram_discretize, mutual_information_matrix
from betavae.evaluation.sampling import GridSampler

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
    denominator = entropies(factors) - (between.max(axis=0) if factors.shape[1] > 1 else 0.0)
    keep = denominator > 0
    return float(np.mean((information[0, keep] - information[1, keep]) / denominator[keep]))


def mmig_histogram(codes: np.ndarray, factors: np.ndarray) -> float:
    """MMIG (Eq. 3 of the poster) with I from 20 histogram bins on μ as in `mig`; the poster's own estimator
    is `mmig`."""
    return mmig_from_information(mutual_information_matrix(histogram_discretize(codes), np.asarray(factors)), factors)



def _gaussian_log_density(z, mu, logvar):
    import torch

    return -0.5 * (np.log(2 * np.pi) + logvar + (z - mu) ** 2 * torch.exp(-logvar))


def posterior_entropy(z, mu, logvar, chunk: int = 256):
    """H[z_j] of the mixture q(z_j) = (1/N) Σ_n N(z_j; μ_j(x_n), σ_j²(x_n)) for every latent j, as Chen et al.
    2018's `estimate_entropies` (beta-tcvae, disentanglement_metrics.py): −mean over the draws z [S, D] (each from
    q(z|x) of one of the images) of log (1/N) Σ_n q(z_j|x_n), the sum by logsumexp. mu, logvar: [N, D]. Returns [D]."""
    import torch

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
    image; at these counts a small stratum underestimates its entropy, which biases every I upwards and AAM, which
    subtracts the information of the other latents, towards zero (docs/metrics.md, "Convergence"): the metric now
    uses quadrature. Deterministic given `seed`. `sampler` (evaluation/sampling.py) draws the images: by default
    uniformly over the grid of `factor_sizes`; on an incomplete grid, strata of images sharing each value.
    """
    import torch

    marginal = marginal or 10_000
    draws = min(draws or 2_000, marginal)
    per_value = per_value or 256
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

ESTIMATORS = ("quadrature", "published")


def posterior_images(context: Context, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
    """(μ, log σ², factor classes, factor sizes) of `count` uniformly drawn images, or of every image when `count`
    reaches the dataset's size. On a complete grid the classes are the factors' own (dSprites: 3, 6, 40, 32, 32);
    on an incomplete one, the classes MIG scores against."""
    sampler, grid = context.sampler, context.sampler.mode == "grid"
    total = int(np.prod(context.factor_sizes)) if grid else sampler.size
    rng = protocol.rng(context.seed, "aam_mmig")
    if count >= total:
        keys = (np.stack(np.meshgrid(*[np.arange(s) for s in context.factor_sizes], indexing="ij"), -1)
                .reshape(-1, len(context.factor_sizes)) if grid else np.arange(total))
    else:
        keys = sampler.sample(rng, count) if grid else rng.choice(total, count, replace=False)
    classes = keys if grid else sampler.factors(keys)
    sizes = tuple(context.factor_sizes) if grid else tuple(int(v) for v in classes.max(axis=0) + 1)
    return (*context.posterior(keys), classes, sizes)


def compute(context: Context) -> dict:
    """The four scores. I for `aam`/`mmig`: quadrature over SAMPLES["aam_images"] uniform images, or with
    aam_estimator=published the estimator of Dubois et al.'s code over every image (complete grids only).
    H(v_k) = log |V_k| on a full grid, from the observed factors on an incomplete one."""
    codes, factors = context.points()
    count = protocol.SAMPLES["mig"]
    codes, factors = codes[:count], factors[:count]
    histogram = mutual_information_matrix(histogram_discretize(codes), factors)
    from betavae.evaluation import mixture  # torch: the registry is read before --help answers

    estimator = context.options.get("aam_estimator", "quadrature")
    uniform = context.sampler.mode == "grid"
    if estimator == "published":
        if not uniform:
            raise Skip("aam_mmig with aam_estimator=published needs a complete factor grid, as its code does")
        mu, logvar, classes, sizes = posterior_images(context, int(np.prod(context.factor_sizes)))
        information = np.maximum(mixture.published_information(
            mu, logvar, classes, sizes, context.seed, protocol.count("published_points"),
            protocol.count("quadrature_points")), 0.0)  # its code clamps I at zero before both scores
    else:
        mu, logvar, classes, sizes = posterior_images(context, protocol.count("aam_images"))
        information = mixture.quadrature_information(mu, logvar, classes, sizes, protocol.count("quadrature_points"))
    return {"aam": aam_from_information(information),
            "mmig": mmig_uniform(information, sizes) if uniform else mmig_from_information(information, classes),
            "aam_histogram": aam_from_information(histogram),
            "mmig_histogram": mmig_from_information(histogram, factors)}


METRIC = Metric("aam_mmig", compute, headline=("aam", "mmig"), needs=frozenset({"factors", "posterior"}),
                draws="uniform", reference="Dubois et al. 2019 (poster), Eq. 2-3; I by quadrature, or as their code")
