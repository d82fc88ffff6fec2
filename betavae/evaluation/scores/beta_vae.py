"""The BetaVAE score (Higgins et al. 2017), as disentanglement_lib's `beta_vae.py`."""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from betavae.evaluation import protocol
from betavae.evaluation.context import Context, Metric
from betavae.evaluation.protocol import Representation
from betavae.evaluation.sampling import GridSampler


def _points(representation: Representation, sampler, count: int, group: int, rng):
    """Training points, all at once: for each a random factor k is shared by `group` pairs; feature = mean over
    pairs of |z1 − z2|, label = k."""
    labels, first, second = sampler.sharing_pairs(rng, count, group)
    z1 = representation(first).reshape(count, group, -1)
    z2 = representation(second).reshape(count, group, -1)
    return np.abs(z1 - z2).mean(axis=1), labels


def beta_vae_score(representation: Representation, factor_sizes: Sequence[int], seed: int = 0,
                   train: int | None = None, test: int | None = None, group: int | None = None,
                   sampler=None) -> float:
    """64 pairs per point, `LogisticRegression()` on 10,000 training points, accuracy on 5,000 evaluation points.
    `sampler` (evaluation/sampling.py) draws the pairs: by default uniformly over the grid of `factor_sizes`."""
    from sklearn.linear_model import LogisticRegression

    rng, group = protocol.rng(seed, "beta_vae"), group or protocol.SAMPLES["group"]
    sampler = sampler or GridSampler(factor_sizes)
    x_train, y_train = _points(representation, sampler, train or protocol.SAMPLES["beta_vae_train"], group, rng)
    x_test, y_test = _points(representation, sampler, test or protocol.SAMPLES["beta_vae_eval"], group, rng)
    if len(np.unique(y_train)) < 2:
        return float(np.mean(y_test == y_train[0]))
    classifier = LogisticRegression(random_state=seed)
    with warnings.catch_warnings():  # sklearn's default iteration cap is part of the protocol
        warnings.simplefilter("ignore")
        classifier.fit(x_train, y_train)
    return float(classifier.score(x_test, y_test))


def compute(context: Context) -> dict:
    return {"beta_vae": beta_vae_score(context.representation, context.factor_sizes, context.seed,
                                       sampler=context.sampler)}


METRIC = Metric("beta_vae", compute, headline=("beta_vae",), needs=frozenset({"factors"}), default=True,
                draws="sampling", reference="Higgins et al. 2017; disentanglement_lib beta_vae.py")
