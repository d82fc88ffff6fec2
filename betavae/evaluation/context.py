"""What one evaluation's metrics share, and what a metric declares about itself.

A metric is one module of `betavae/evaluation/scores/` with one `Metric` entry in that package's registry. It computes
its scores from a `Context`: the representation function, the sampler of the dataset's images, one shared draw of
points (encoded once, serving every metric whose protocol asks for uniform points), classifiers fitted once and shared
where two protocols fit the same one on the same points, and a pool of threads, one per core.
"""
from __future__ import annotations

import concurrent.futures
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from betavae.evaluation import protocol


class Skip(Exception):
    """A metric that cannot run on this dataset or selection; its message says why in one line."""


NEEDS = {"factors": "needs ground-truth factors",
         "grid": "needs images rendered from chosen factor values (a complete factor grid)",
         "posterior": "needs the encoder's posterior (μ, log σ²)",
         "models": "compares several models: sweep.py computes it over the seeds of a setting, "
                   "traverse.py --udr RUN RUN ... over run folders"}


@dataclass(frozen=True)
class Metric:
    """One metric: its registry name, the function from a Context to its scores, and what it needs."""
    name: str                                  # registry name, used by the `metrics` param
    compute: Callable[["Context"], dict]       # Context -> {key: float}
    headline: tuple[str, ...] | Callable[[], tuple[str, ...]]  # the keys reports show (metrics.yaml holds all)
    needs: frozenset = frozenset()             # of NEEDS
    default: bool = False                      # in the default selection
    draws: str = "pairs"                       # how it draws images: pairs | sampling | strata | uniform | interventions
    reference: str = ""                        # paper and the code whose protocol it follows

    def headline_keys(self) -> tuple[str, ...]:
        return tuple(self.headline() if callable(self.headline) else self.headline)


def worker_count(tasks: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(tasks, cores))


class Context:
    """The shared state of one evaluation of one representation (the mean or the sampled one)."""

    def __init__(self, representation: Callable[[np.ndarray], np.ndarray], sampler, seed: int = 0, *,
                 factor_sizes: Sequence[int] | None = None, factor_names: Sequence[str] | None = None,
                 posterior: Callable | None = None, grid: bool = False, progress: bool = True,
                 options: dict | None = None):
        self.representation, self.sampler, self.seed, self.progress = representation, sampler, seed, progress
        self.options = options or {}  # the metrics' own choices (aam_estimator)
        self.factor_sizes = tuple(factor_sizes) if factor_sizes is not None else None
        self.factor_names = list(factor_names) if factor_names is not None else None
        self.posterior, self.grid = posterior, grid
        self._points: tuple[np.ndarray, np.ndarray | None] | None = None
        self._shared: dict = {}

    @property
    def has_factors(self) -> bool:
        return self.factor_sizes is not None

    def missing(self, needs: Iterable[str]) -> str | None:
        """Why a metric with these needs cannot run here, or None."""
        have = {"factors": self.has_factors, "grid": self.grid and self.has_factors,
                "posterior": self.posterior is not None, "models": False}
        lacking = [need for need in needs if not have[need]]
        return NEEDS[lacking[0]] if lacking else None

    def points(self) -> tuple[np.ndarray, np.ndarray | None]:
        """One shared draw of uniform points, encoded once: codes [N, D] float64 and factors [N, K] (None without
        factors), N = the larger of SAMPLES["mig"] and SAMPLES["split"]; `split` divides the first SAMPLES["split"]."""
        if self._points is None:
            count = max(protocol.SAMPLES["mig"], protocol.SAMPLES["split"])
            keys = self.sampler.sample(protocol.rng(self.seed, "fixed_points"), count)
            codes = np.asarray(self.representation(keys), dtype=np.float64)
            self._points = codes, (self.sampler.factors(keys) if self.has_factors else None)
        return self._points

    def split(self):
        """(train codes, train factors, test codes, test factors): 10,000 / 5,000 by protocol."""
        codes, factors = self.points()
        n_train, n_all = protocol.train_count(), protocol.SAMPLES["split"]
        factors = factors if factors is not None else np.zeros((len(codes), 0), dtype=np.int64)
        return codes[:n_train], factors[:n_train], codes[n_train:n_all], factors[n_train:n_all]

    def shared(self, key, build: Callable[[], object]):
        """`build()` once per evaluation and key: a classifier that two protocols fit on the same points."""
        if key not in self._shared:
            self._shared[key] = build()
        return self._shared[key]

    def map(self, function: Callable, items: Sequence) -> list:
        """`function` over `items` in threads, one per core (scikit-learn's fitting releases the GIL). The warnings the
        protocols' classifiers raise (iteration caps, rare classes at small sizes) are theirs and are silenced here,
        in the calling thread: `warnings.catch_warnings` inside the threads would race on the global filters."""
        items = list(items)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with concurrent.futures.ThreadPoolExecutor(worker_count(len(items))) as pool:
                return list(pool.map(function, items))
