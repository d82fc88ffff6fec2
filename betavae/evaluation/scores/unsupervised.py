"""The unsupervised scores of disentanglement_lib's study (`unsupervised_metrics.py`): how far the codes are from a
factorised distribution, with no factors needed."""
from __future__ import annotations

import numpy as np

from betavae.evaluation import protocol
from betavae.evaluation.context import Context, Metric
from betavae.evaluation.discretise import histogram_discretize, mutual_information_matrix


def gaussian_total_correlation(cov: np.ndarray) -> float:
    """KL between N(0, C) and the product of its marginals: ½ (Σ log Cᵢᵢ − log det C)."""
    return float(0.5 * (np.sum(np.log(np.diag(cov))) - np.linalg.slogdet(cov)[1]))


def gaussian_wasserstein_correlation(cov: np.ndarray) -> float:
    """Squared 2-Wasserstein distance between N(0, C) and the product of its marginals: 2 tr C − 2 tr √(C·diag C)."""
    from scipy.linalg import sqrtm

    root = sqrtm(cov * np.diag(cov)[:, None])
    return float(np.real(2 * np.trace(cov) - 2 * np.trace(root)))


def unsupervised_scores(codes: np.ndarray) -> dict[str, float]:
    """The four scores of codes [N, D] (10,000 points by protocol). A latent whose code never varies is independent of
    the rest and adds nothing; it is left out of the Gaussian scores, where disentanglement_lib would give log 0."""
    codes = np.asarray(codes, dtype=np.float64)
    cov = np.atleast_2d(np.cov(codes.T))
    varies = np.diag(cov) > 0
    cov = cov[varies][:, varies] if varies.any() else np.ones((1, 1))
    wasserstein = gaussian_wasserstein_correlation(cov)
    discrete = histogram_discretize(codes)
    information = mutual_information_matrix(discrete, discrete)
    np.fill_diagonal(information, 0.0)
    dims = codes.shape[1]
    return {"gaussian_total_correlation": gaussian_total_correlation(cov),
            "gaussian_wasserstein_correlation": wasserstein,
            "gaussian_wasserstein_correlation_norm": wasserstein / float(np.sum(np.diag(cov))),
            "mutual_info_score": float(information.sum() / (dims ** 2 - dims)) if dims > 1 else 0.0}


def compute(context: Context) -> dict:
    codes, _ = context.points()
    return unsupervised_scores(codes[:protocol.SAMPLES["mig"]])


METRIC = Metric("unsupervised", compute, default=True,
                headline=("gaussian_total_correlation", "gaussian_wasserstein_correlation_norm", "mutual_info_score"),
                reference="Locatello et al. 2019; disentanglement_lib unsupervised_metrics.py")
