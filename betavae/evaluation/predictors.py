"""Scores that fit a predictor from codes to factors: SAP, DCI, the BetaVAE score and the FactorVAE score, each on
disentanglement_lib's protocol (Locatello et al. 2019)."""
from __future__ import annotations

import concurrent.futures
import os
import warnings
from typing import Sequence

import numpy as np
from tqdm import tqdm

from betavae.evaluation import protocol
from betavae.evaluation.protocol import FACTOR_VAE_PRUNE_STD, Representation
from betavae.evaluation.sampling import GridSampler

def _split(codes: np.ndarray, factors: np.ndarray):
    n_train = (2 * len(codes)) // 3
    return codes[:n_train], factors[:n_train], codes[n_train:], factors[n_train:]


def sap(codes: np.ndarray, factors: np.ndarray, seed: int = 0) -> float:
    """Separated Attribute Predictability (Kumar et al. 2018) as disentanglement_lib's `sap_score.py` with
    discrete factors: for every (latent, factor) a `LinearSVC(C=0.01, class_weight="balanced")` on that one
    latent, test accuracy; mean over factors of the gap between the two most predictive latents.
    The first two thirds of the points train, the last third tests (10,000 / 5,000 by protocol).
    """
    from sklearn.svm import LinearSVC

    codes, factors = np.asarray(codes, dtype=np.float64), np.asarray(factors)
    x_train, y_train, x_test, y_test = _split(codes, factors)
    accuracy = np.zeros((codes.shape[1], factors.shape[1]))
    for j in range(codes.shape[1]):
        for k in range(factors.shape[1]):
            if len(np.unique(y_train[:, k])) < 2:
                continue  # nothing to separate; the factor scores 0 for every latent
            classifier = LinearSVC(C=0.01, class_weight="balanced", random_state=seed)
            with warnings.catch_warnings():  # convergence warnings at C = 0.01 are the protocol's, not ours
                warnings.simplefilter("ignore")
                classifier.fit(x_train[:, j:j + 1], y_train[:, k])
            accuracy[j, k] = np.mean(classifier.predict(x_test[:, j:j + 1]) == y_test[:, k])
    ranked = np.sort(accuracy, axis=0)
    return float(np.mean(ranked[-1] - ranked[-2]))


def _entropy_rows(p: np.ndarray, base: int) -> np.ndarray:
    """scipy.stats.entropy of each row after normalising it, in the given base (as DCI uses it)."""
    p = p / p.sum(axis=1, keepdims=True)
    return -np.sum(p * np.log(p), axis=1) / np.log(base)


def dci_from_importance(importance: np.ndarray) -> tuple[float, float]:
    """Disentanglement and completeness of an importance matrix [D latents, K factors] (Eastwood & Williams
    2018, disentanglement_lib `dci.py`): 1 − entropy per latent (base K) weighted by the latent's share of
    importance, and 1 − entropy per factor (base D) weighted by the factor's share."""
    importance = np.abs(importance)
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    padded = importance + 1e-11  # disentanglement_lib's guard against log 0
    disentanglement = np.sum((1 - _entropy_rows(padded, importance.shape[1])) * weights.sum(1) / weights.sum())
    completeness = np.sum((1 - _entropy_rows(padded.T, importance.shape[0])) * weights.sum(0) / weights.sum())
    return float(disentanglement), float(completeness)


def _worker_count(tasks: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(tasks, cores))


def dci(codes: np.ndarray, factors: np.ndarray, seed: int = 0, progress: bool = True) -> dict[str, float]:
    """DCI (Eastwood & Williams 2018) as disentanglement_lib's `dci.py`: a default `GradientBoostingClassifier`
    per factor on all latents, |feature importances| → disentanglement and completeness; informativeness is
    the mean test accuracy. Split as `sap`. Factors train in parallel threads (tree fitting releases the GIL)
    and a bar counts boosting stages; `random_state=seed` only fixes sklearn's tie-breaking for determinism.
    """
    from sklearn.ensemble import GradientBoostingClassifier

    codes, factors = np.asarray(codes, dtype=np.float64), np.asarray(factors)
    x_train, y_train, x_test, y_test = _split(codes, factors)
    stages = GradientBoostingClassifier().n_estimators
    bar = tqdm(total=stages * factors.shape[1], desc="DCI boosted trees", leave=False, disable=not progress)

    def tick(*_) -> bool:
        bar.update(1)
        return False  # GradientBoostingClassifier stops early when its monitor returns True

    def fit(k: int) -> tuple[np.ndarray, float, float]:
        if len(np.unique(y_train[:, k])) < 2:
            bar.update(stages)
            return np.zeros(codes.shape[1]), 1.0, float(np.mean(y_test[:, k] == y_train[0, k]))
        model = GradientBoostingClassifier(random_state=seed)
        model.fit(x_train, y_train[:, k], monitor=tick)
        return (np.abs(model.feature_importances_), float(np.mean(model.predict(x_train) == y_train[:, k])),
                float(np.mean(model.predict(x_test) == y_test[:, k])))

    with concurrent.futures.ThreadPoolExecutor(_worker_count(factors.shape[1])) as pool:
        results = list(pool.map(fit, range(factors.shape[1])))
    bar.close()
    importance = np.stack([r[0] for r in results], axis=1)  # [D, K]
    disentanglement, completeness = dci_from_importance(importance)
    return {"disentanglement": disentanglement, "completeness": completeness,
            "informativeness": float(np.mean([r[2] for r in results])),
            "informativeness_train": float(np.mean([r[1] for r in results]))}


# ---------------------------------------------------------------- metrics that sample factors

def _beta_vae_points(representation: Representation, sampler, count: int, group: int, rng):
    """Higgins et al. 2017 training points, all at once: for each point a random factor k is shared by
    `group` pairs; feature = mean over pairs of |z1 − z2|, label = k."""
    labels, first, second = sampler.sharing_pairs(rng, count, group)
    z1 = representation(first).reshape(count, group, -1)
    z2 = representation(second).reshape(count, group, -1)
    return np.abs(z1 - z2).mean(axis=1), labels


def beta_vae_score(representation: Representation, factor_sizes: Sequence[int], seed: int = 0,
                   train: int | None = None, test: int | None = None, group: int | None = None,
                   sampler=None) -> float:
    """The Higgins et al. 2017 metric as disentanglement_lib's `beta_vae.py`: 64 pairs per point,
    `LogisticRegression()` on 10,000 training points, accuracy on 5,000 evaluation points. `sampler`
    (evaluation/sampling.py) draws the pairs: by default uniformly over the grid of `factor_sizes`."""
    from sklearn.linear_model import LogisticRegression

    rng, group = protocol.rng(seed, "beta_vae"), group or protocol.SAMPLES["group"]
    sampler = sampler or GridSampler(factor_sizes)
    x_train, y_train = _beta_vae_points(representation, sampler, train or protocol.SAMPLES["beta_vae_train"], group, rng)
    x_test, y_test = _beta_vae_points(representation, sampler, test or protocol.SAMPLES["beta_vae_eval"], group, rng)
    if len(np.unique(y_train)) < 2:
        return float(np.mean(y_test == y_train[0]))
    classifier = LogisticRegression(random_state=seed)
    with warnings.catch_warnings():  # sklearn's default iteration cap is part of the protocol
        warnings.simplefilter("ignore")
        classifier.fit(x_train, y_train)
    return float(classifier.score(x_test, y_test))


def _factor_vae_votes(representation, sampler, count, group, rng, scale, active) -> np.ndarray:
    """Kim & Mnih 2018 votes, all at once: fix one factor over `group` samples, vote for the active latent
    of least variance normalised by its global variance. Returns counts [K, D]."""
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
    """The Kim & Mnih 2018 metric as disentanglement_lib's `factor_vae.py`: global variances from 10,000
    samples, latents with std < 0.05 pruned, 64 samples per vote, a majority-vote classifier from 10,000
    votes, its accuracy on 5,000 more. Returns 0 when every latent is pruned, as the reference does.
    `sampler` as in `beta_vae_score`."""
    rng, group = protocol.rng(seed, "factor_vae"), group or protocol.SAMPLES["group"]
    sampler = sampler or GridSampler(factor_sizes)
    codes = representation(sampler.sample(rng, variance_points or protocol.SAMPLES["factor_vae_variance"]))
    variance = np.var(codes, axis=0, ddof=1)
    active = np.sqrt(variance) >= FACTOR_VAE_PRUNE_STD
    if not active.any():
        return 0.0
    train_votes = _factor_vae_votes(representation, sampler, train or protocol.SAMPLES["factor_vae_train"], group,
                                    rng, variance, active)
    test_votes = _factor_vae_votes(representation, sampler, test or protocol.SAMPLES["factor_vae_eval"], group,
                                   rng, variance, active)
    classifier = np.argmax(train_votes, axis=0)  # the factor each latent votes for most often
    return float(test_votes[classifier, np.arange(len(classifier))].sum() / test_votes.sum())
