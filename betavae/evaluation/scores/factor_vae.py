"""The FactorVAE score (Kim & Mnih 2018), as disentanglement_lib's `factor_vae.py`."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from betavae.evaluation import protocol
from betavae.evaluation.context import Context, Metric
from betavae.evaluation.protocol import FACTOR_VAE_PRUNE_STD, Representation
from betavae.evaluation.sampling import GridSampler


def _votes(representation, sampler, count, group, rng, scale, active) -> np.ndarray:
    """Votes, all at once: fix one factor over `group` samples, vote for the active latent of least variance
    normalised by its global variance. Returns counts [K, D]."""
    labels, keys = sampler.fixed_groups(rng, count, group)
    codes = representation(keys).reshape(count, group, -1)
    local = codes.var(axis=1, ddof=1)[:, active] / scale[active]  # [count, active]
    winners = np.flatnonzero(active)[np.argmin(local, axis=1)]
    votes = np.zeros((sampler.count, len(scale)), dtype=np.int64)
    np.add.at(votes, (labels, winners), 1)
    return votes


def factor_vae_score(representation: Representation, factor_sizes: Sequence[int], seed: int = 0,
                     train: int | None = None, test: int | None = None, group: int | None = None,
                     variance_points: int | None = None, sampler=None) -> float:
    """Global variances from 10,000 samples, latents with std < 0.05 pruned, 64 samples per vote, a majority-vote
    classifier from 10,000 votes, its accuracy on 5,000 more; 0 when every latent is pruned, as the reference."""
    rng, group = protocol.rng(seed, "factor_vae"), group or protocol.SAMPLES["group"]
    sampler = sampler or GridSampler(factor_sizes)
    codes = representation(sampler.sample(rng, variance_points or protocol.SAMPLES["factor_vae_variance"]))
    variance = np.var(codes, axis=0, ddof=1)
    active = np.sqrt(variance) >= FACTOR_VAE_PRUNE_STD
    if not active.any():
        return 0.0
    train_votes = _votes(representation, sampler, train or protocol.SAMPLES["factor_vae_train"], group,
                         rng, variance, active)
    test_votes = _votes(representation, sampler, test or protocol.SAMPLES["factor_vae_eval"], group,
                        rng, variance, active)
    classifier = np.argmax(train_votes, axis=0)  # the factor each latent votes for most often
    return float(test_votes[classifier, np.arange(len(classifier))].sum() / test_votes.sum())


def compute(context: Context) -> dict:
    return {"factor_vae": factor_vae_score(context.representation, context.factor_sizes, context.seed,
                                           sampler=context.sampler)}


METRIC = Metric("factor_vae", compute, headline=("factor_vae",), needs=frozenset({"factors"}), default=True,
                draws="sampling", reference="Kim & Mnih 2018; disentanglement_lib factor_vae.py")
