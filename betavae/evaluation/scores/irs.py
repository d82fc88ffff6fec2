"""IRS, the Interventional Robustness Score (Suter et al. 2019), as disentanglement_lib's `irs.py`, with the number
of active dimensions counted as the paper defines it (disentanglement_lib sums the codes of the active dimensions)."""
from __future__ import annotations

import numpy as np

from betavae.evaluation import protocol
from betavae.evaluation.context import Context, Metric
from betavae.evaluation.discretise import histogram_discretize


def irs_score(factors: np.ndarray, codes: np.ndarray, quantile: float = protocol.IRS_QUANTILE) -> float:
    """`scalable_disentanglement_score`: per latent, 1 − (mean over factor values of the `quantile` of |z − E[z | v_k]|)
    / max |z − E z|, maximised over factors; averaged over latents weighted by their maximal deviation."""
    max_deviations = np.max(np.abs(codes - codes.mean(axis=0)), axis=0)
    deviations = np.zeros((codes.shape[1], factors.shape[1]))
    for k in range(factors.shape[1]):
        values = np.unique(factors[:, k])
        for value in values:
            match = factors[:, k] == value
            spread = np.abs(codes[match] - codes[match].mean(axis=0))
            deviations[:, k] += np.percentile(spread, q=quantile * 100, axis=0)
        deviations[:, k] /= len(values)
    scores = (1.0 - deviations / max_deviations[:, None]).max(axis=1)
    if np.sum(max_deviations) > 0:
        return float(np.average(scores, weights=max_deviations))
    return float(np.mean(scores))


def irs(codes: np.ndarray, factors: np.ndarray) -> dict[str, float]:
    """IRS of codes [N, D] against factors [N, K] (10,000 points by protocol; factors through the 20-bin
    discretiser, as the reference), on the latents whose codes vary; 0 when none does."""
    active = np.asarray(codes, dtype=np.float64)[:, np.var(codes, axis=0) > 0]
    score = irs_score(histogram_discretize(factors), active) if active.shape[1] else 0.0
    return {"IRS": score, "num_active_dims": float(active.shape[1])}


def compute(context: Context) -> dict:
    codes, factors = context.points()
    count = protocol.SAMPLES["mig"]
    return irs(codes[:count], factors[:count])


METRIC = Metric("irs", compute, headline=("IRS",), needs=frozenset({"factors"}),
                reference="Suter et al. 2019; disentanglement_lib irs.py (sample config: 10,000 points, quantile 0.99)")
