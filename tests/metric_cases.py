"""Constructed representations whose scores are known, shared by the tests of the metric modules: codes that are the
factors (identity), the factors mixed by a rotation, codes independent of the factors (noise), and any of these
with a constant latent added."""
import numpy as np

from betavae.evaluation.context import Context
from betavae.evaluation.sampling import GridSampler

SIZES = (4, 4, 4)
HADAMARD = np.array([[1, 1, 1], [1, -1, 1], [1, 1, -1]]) / np.sqrt(3)   # mixes every factor into every latent


def codes_of(factors: np.ndarray, variant: str, sizes=SIZES, seed: int = 0) -> np.ndarray:
    """Codes [N, D] of factor classes [N, K] for a variant: identity, rotated, noise, or one of them + "+constant"."""
    base, _, extra = variant.partition("+")
    standard = (factors - (np.array(sizes) - 1) / 2) / np.array(sizes)
    if base == "identity":
        codes = standard
    elif base == "rotated":
        codes = standard @ HADAMARD
    elif base == "noise":
        codes = np.random.default_rng(seed + len(factors)).normal(size=factors.shape)
    else:
        raise ValueError(variant)
    if extra == "constant":
        codes = np.concatenate([codes, np.full((len(codes), 1), 0.25)], axis=1)
    return codes


def context(variant: str, sizes=SIZES, seed: int = 0) -> Context:
    """A Context over a complete grid whose representation is `codes_of(..., variant)`; the posterior is the codes
    with a small fixed variance."""
    def representation(keys):
        return codes_of(np.asarray(keys, dtype=np.float64), variant, sizes, seed)

    def posterior(keys):
        mu = representation(keys)
        return mu, np.full(mu.shape, np.log(0.01))

    return Context(representation, GridSampler(sizes), seed, factor_sizes=sizes,
                   factor_names=[f"f{k}" for k in range(len(sizes))], posterior=posterior, grid=True, progress=False)
