"""UDR, Unsupervised Disentanglement Ranking (Duan et al. 2020), as disentanglement_lib's `udr.py` (`udr_sklearn`).

UDR scores each model by how similar its representation is to those of other models trained with the same
hyperparameters and other seeds, so it needs two or more models: sweep.py computes it over the seeds of each setting,
and `traverse.py --udr RUN RUN ...` over run folders trained on the same data. A single run skips it with one line.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from betavae.evaluation import protocol
from betavae.evaluation.context import Context, Metric, Skip


def relative_strength(correlation: np.ndarray) -> float:
    """disentanglement_lib's `relative_strength_disentanglement`: mean over columns and over rows of max² / sum; 0 when
    a model has no active latent (the reference would fail on the empty matrix)."""
    if correlation.size == 0:
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.nanmean(np.nan_to_num(np.max(correlation, axis=0) ** 2 / np.sum(correlation, axis=0), nan=0.0))
        y = np.nanmean(np.nan_to_num(np.max(correlation, axis=1) ** 2 / np.sum(correlation, axis=1), nan=0.0))
    return float((x + y) / 2)


def lasso_correlation(first: np.ndarray, second: np.ndarray, seed: int) -> np.ndarray:
    """|coefficients| of `Lasso(alpha=0.1)` from the first representation to the second: [D1, D2]."""
    from sklearn.linear_model import Lasso

    return np.abs(Lasso(alpha=0.1, random_state=seed).fit(first, second).coef_).T


def spearman_correlation(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """|Spearman correlation| of every latent of the first with every latent of the second: [D1, D2] (the Pearson
    correlation of the ranks, as scipy.stats.spearmanr pair by pair); nan for a constant (masked) latent, as there."""
    from scipy.stats import rankdata

    def standardised_ranks(codes: np.ndarray) -> np.ndarray:
        ranks = rankdata(codes, axis=0)
        ranks = ranks - ranks.mean(axis=0)
        norm = np.sqrt((ranks ** 2).sum(axis=0))
        with np.errstate(divide="ignore", invalid="ignore"):
            return ranks / np.where(norm > 0, norm, np.nan)

    return np.abs(standardised_ranks(first).T @ standardised_ranks(second))


def kl_per_latent(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """Mean KL(q(z_j|x) ‖ N(0, 1)) over the images, per latent: [D]."""
    return np.mean(0.5 * (mu ** 2 + np.exp(logvar) - logvar - 1.0), axis=0)


def udr(posteriors: Sequence[tuple[np.ndarray, np.ndarray]], seed: int = 0) -> dict[str, list[float]]:
    """UDR of each model from the posteriors (μ, log σ²) [N, D] of the same N images (1,000 by protocol): codes μ
    standardised, latents with mean KL ≤ 0.01 zeroed and left out; for every ordered pair of models the relative
    strength of the Lasso and of the Spearman correlation matrix; each model's score is the median over its pairs.
    Returns {"udr_lasso": [per model], "udr_spearman": [per model]}."""
    if len(posteriors) < 2:
        raise Skip("udr needs two or more models trained on the same data (other seeds of the same setting)")
    codes, masks = [], []
    for mu, logvar in posteriors:
        mu = np.asarray(mu, dtype=np.float64)
        std = mu.std(axis=0)
        kl = kl_per_latent(mu, np.asarray(logvar, dtype=np.float64))
        codes.append((mu - mu.mean(axis=0)) / np.where(std > 0, std, 1.0) * (kl > protocol.UDR_KL_THRESHOLD))
        masks.append(kl > protocol.UDR_KL_THRESHOLD)
    count, result = len(codes), {}
    for name in ("lasso", "spearman"):
        pairwise = np.zeros((count, count))
        for i in range(count):
            for j in range(count):
                if i == j:
                    continue
                matrix = (lasso_correlation(codes[i], codes[j], seed) if name == "lasso"
                          else spearman_correlation(codes[i], codes[j]))
                pairwise[i, j] = relative_strength(matrix[masks[i]][:, masks[j]])
        result[f"udr_{name}"] = [float(np.median(np.delete(pairwise[:, i], i))) for i in range(count)]
    return result


def udr_of_models(models: list, dataset, seed: int = 0, progress: bool = False) -> dict[str, list[float]]:
    """UDR of trained models on one dataset: each encodes the same SAMPLES["udr_points"] images drawn uniformly."""
    from betavae.evaluation.codes import DatasetCodes
    from betavae.evaluation.sampling import sampler_for

    if len(models) < 2:
        raise Skip("udr needs two or more models trained on the same data (other seeds of the same setting)")
    sampler = sampler_for(dataset)
    keys = sampler.sample(protocol.rng(seed, "udr"), protocol.count("udr_points"))
    return udr([DatasetCodes(model, dataset, progress=progress).posterior(keys) for model in models], seed)


def compute(context: Context) -> dict:
    raise Skip("udr compares several models: sweep.py computes it over the seeds of each setting, "
               "traverse.py --udr RUN RUN ... over run folders")


METRIC = Metric("udr", compute, headline=("udr_lasso", "udr_spearman"), needs=frozenset({"models"}),
                reference="Duan et al. 2020; disentanglement_lib udr.py (udr_sklearn)")
