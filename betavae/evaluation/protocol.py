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
    # AAM and MMIG (evaluation/mixture.py): the images whose posteriors form every mixture (every image of a dataset up
    # to a million: on dSprites' capacity β-VAE, 100,000 left AAM 0.1 short), and the grid points per latent of the
    # quadrature; the published estimator's means per entropy (its code's 10,000), over every image.
    "aam_images": 1_000_000, "quadrature_points": 1_024, "published_points": 10_000,
    # The rest of disentanglement_lib's study (config/unsupervised_study_v1/metric_configs, fairness_study_v1):
    # modularity/explicitness, the unsupervised scores and IRS take the first 10,000 shared points (and the 5,000
    # test points); the downstream task trains on the first 10, 100, 1,000 and 10,000 and tests on the 5,000.
    "downstream_train": [10, 100, 1_000, 10_000],
    "fairness_per_class": 100,          # test points per value of the sensitive factor
    "udr_points": 1_000,                # images every model encodes for UDR (Duan et al. 2020)
}
HISTOGRAM_BINS = 20                     # disentanglement_lib's discretizer for MIG
FACTOR_VAE_PRUNE_STD = 0.05             # Kim & Mnih: latents with a smaller global std are collapsed

IRS_QUANTILE = 0.99                     # disentanglement_lib's `diff_quantile` for IRS (1.0 is the paper's maximum)
UDR_KL_THRESHOLD = 0.01                 # nats: latents below this mean KL are left out of UDR (Duan et al. 2020)

Representation = Callable[[np.ndarray], np.ndarray]


DEFAULTS = dict(SAMPLES)


def count(name: str):
    """SAMPLES[name], or its protocol default when a caller (a test) set SAMPLES without it."""
    return SAMPLES.get(name, DEFAULTS[name])


def train_count() -> int:
    """Of the SAMPLES["split"] shared points, how many train (two thirds: 10,000 of 15,000); the rest test."""
    return (2 * SAMPLES["split"]) // 3


def rng(seed: int, name: str) -> np.random.Generator:
    """One stream per metric, so adding or reordering metrics never changes another metric's samples."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def sample_factors(rng: np.random.Generator, count: int, factor_sizes: Sequence[int]) -> np.ndarray:
    """Uniform factor classes: int64 [count, K]."""
    return np.stack([rng.integers(size, size=count) for size in factor_sizes], axis=1)
