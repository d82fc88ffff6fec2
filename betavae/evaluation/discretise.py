"""The discretisation and plug-in information the metrics share: disentanglement_lib's 20-bin histogram discretiser
(`utils._histogram_discretize`) and mutual information as `sklearn.metrics.mutual_info_score` computes it."""
from __future__ import annotations

import numpy as np

from betavae.evaluation.protocol import HISTOGRAM_BINS


def histogram_discretize(codes: np.ndarray, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Each column into `bins` equal-width bins over its own range: [N, D] -> int [N, D]."""
    codes = np.asarray(codes, dtype=np.float64)
    out = np.zeros(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        out[:, j] = np.digitize(codes[:, j], np.histogram(codes[:, j], bins)[1][:-1])
    return out


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information (nats) of two integer vectors, as sklearn's mutual_info_score."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    a, b = a.ravel(), b.ravel()
    if a.max() == 0 or b.max() == 0:
        return 0.0  # a constant carries no information (the sum below would leave rounding error of ~1e-16)
    joint = np.bincount(a * (b.max() + 1) + b, minlength=(a.max() + 1) * (b.max() + 1)).reshape(a.max() + 1, -1)
    joint = joint / len(a)
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nonzero = joint > 0
    return max(float(np.sum(joint[nonzero] * np.log(joint[nonzero] / outer[nonzero]))), 0.0)


def mutual_information_matrix(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """I(z_j; v_k) for every column j of the first and k of the second: [D, K] in nats."""
    return np.array([[mutual_information(discrete_codes[:, j], factors[:, k]) for k in range(factors.shape[1])]
                     for j in range(discrete_codes.shape[1])])


def entropies(factors: np.ndarray) -> np.ndarray:
    """H(v_k) of each column (nats), as disentanglement_lib's `discrete_entropy`."""
    return np.array([mutual_information(factors[:, k], factors[:, k]) for k in range(factors.shape[1])])


def sorted_information(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """I(z_j; v_k) from the histogram discretiser, sorted over latents, largest first: [D, K]."""
    return -np.sort(-mutual_information_matrix(histogram_discretize(codes), np.asarray(factors)), axis=0)
