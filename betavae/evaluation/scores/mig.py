"""MIG, the mutual information gap (Chen et al. 2018), as disentanglement_lib's `mig.py` estimates it."""
from __future__ import annotations

import numpy as np

from betavae.evaluation import protocol
from betavae.evaluation.context import Context, Metric
from betavae.evaluation.discretise import entropies, sorted_information


def mig(codes: np.ndarray, factors: np.ndarray) -> float:
    """20 equal-width bins per latent, plug-in mutual information with each factor, (largest − second) / H(v_k),
    mean over factors; 10,000 points by protocol. Not Chen et al. 2018's own estimate, which takes I from q(z|x)
    over the whole dataset: the two give different numbers. A factor constant in the sample is left out."""
    information = sorted_information(codes, factors)
    entropy = entropies(np.asarray(factors))
    keep = entropy > 0
    return float(np.mean((information[0, keep] - information[1, keep]) / entropy[keep]))


def compute(context: Context) -> dict:
    codes, factors = context.points()
    count = protocol.SAMPLES["mig"]
    return {"mig": mig(codes[:count], factors[:count])}


METRIC = Metric("mig", compute, headline=("mig",), needs=frozenset({"factors"}), default=True,
                reference="Chen et al. 2018; disentanglement_lib mig.py (Locatello et al. 2019)")
