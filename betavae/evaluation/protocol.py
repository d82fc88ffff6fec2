"""The protocols the metrics follow: sample counts (disentanglement_lib's defaults; tests shrink them), bins, and
one random stream per metric."""
from __future__ import annotations

import zlib
from typing import Callable, Sequence

import numpy as np

# disentanglement_lib's defaults (gin configs of unsupervised_study_v1); tests shrink them.
SAMPLES = {
    "mig": 10_000,                      # points for MIG, AAM and MMIG
    "split": 15_000,                    # points for SAP and DCI: the first 2/3 train, the last 1/3 test
    "beta_vae_train": 10_000, "beta_vae_eval": 5_000,
    "factor_vae_variance": 10_000, "factor_vae_train": 10_000, "factor_vae_eval": 5_000,
    "group": 64,                        # pairs (BetaVAE) or samples (FactorVAE) behind one training point
    # The poster's q(z|x) estimator for AAM and MMIG (`posterior_information`), sized for CPU: images whose
    # posteriors form q(z_j), z draws scored against that mixture, and images per value of each factor.
    "poster_marginal": 10_000, "poster_entropy_draws": 2_000, "poster_per_value": 256,
}
POSTER_DEFAULTS = {"poster_marginal": 10_000, "poster_entropy_draws": 2_000, "poster_per_value": 256}
HISTOGRAM_BINS = 20                     # disentanglement_lib's discretizer for MIG
FACTOR_VAE_PRUNE_STD = 0.05             # Kim & Mnih: latents with a smaller global std are collapsed

Representation = Callable[[np.ndarray], np.ndarray]


def rng(seed: int, name: str) -> np.random.Generator:
    """One stream per metric, so adding or reordering metrics never changes another metric's samples."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def sample_factors(rng: np.random.Generator, count: int, factor_sizes: Sequence[int]) -> np.ndarray:
    """Uniform factor classes: int64 [count, K]."""
    return np.stack([rng.integers(size, size=count) for size in factor_sizes], axis=1)
