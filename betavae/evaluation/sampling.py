"""How the metrics draw images of a dataset with factors: uniformly over a complete factor grid (disentanglement_lib's
protocol on dSprites), else from the observed (image, factors) pairs; continuous factors are binned.

A sampler hands out keys that the representation function reads: factor classes [N, K] on a complete grid (each names
one image), dataset rows [N] otherwise. Each method draws from the `rng` it is given, in a fixed order, so the scores
stay deterministic given the seed; on a complete grid the draws are exactly those of disentanglement_lib's protocol.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from betavae.evaluation import protocol
from betavae.evaluation.protocol import HISTOGRAM_BINS

CONTINUOUS = 100  # a factor with more distinct values than this is continuous: binned for MIG, SAP and DCI


class GridSampler:
    """Keys are factor classes [N, K], drawn uniformly: every combination of classes has exactly one image."""

    mode = "grid"

    def __init__(self, factor_sizes: Sequence[int], bin_tables: dict[int, np.ndarray] | None = None):
        self.factor_sizes, self.bin_tables, self.count = tuple(factor_sizes), bin_tables or {}, len(factor_sizes)

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return protocol.sample_factors(rng, count, self.factor_sizes)

    def factors(self, keys: np.ndarray) -> np.ndarray:
        """The factor classes MIG, SAP and DCI score against: [N, K], continuous factors as their bins."""
        out = np.array(keys, dtype=np.int64, copy=True)
        for k, table in self.bin_tables.items():
            out[:, k] = table[out[:, k]]
        return out

    def sharing_pairs(self, rng, count: int, group: int):
        """BetaVAE: per point a factor k (the label) and `group` pairs sharing k's value: labels, first, second keys."""
        labels = rng.integers(self.count, size=count)
        first = self.sample(rng, count * group).reshape(count, group, -1)
        second = self.sample(rng, count * group).reshape(count, group, -1)
        rows = np.arange(count)
        second[rows, :, labels] = first[rows, :, labels]
        return labels, first.reshape(count * group, -1), second.reshape(count * group, -1)

    def fixed_groups(self, rng, count: int, group: int):
        """FactorVAE: per point a factor k (the label) held at one value over `group` samples: labels, keys."""
        labels = rng.integers(self.count, size=count)
        factors = self.sample(rng, count * group).reshape(count, group, -1)
        rows = np.arange(count)
        factors[rows, :, labels] = factors[rows, 0, labels][:, None]
        return labels, factors.reshape(count * group, -1)

    def strata(self, rng, k: int, per_value: int):
        """`per_value` keys for each value of factor k, value-major, the other factors uniform: keys, values."""
        size = self.factor_sizes[k]
        factors = self.sample(rng, size * per_value)
        factors[:, k] = np.repeat(np.arange(size), per_value)
        return factors, size


class ObservedSampler:
    """Keys are dataset rows, drawn uniformly; a fixed factor value is kept by drawing among the rows that share it
    (a continuous factor's value being its bin)."""

    mode = "observed"

    def __init__(self, classes: np.ndarray, bin_tables: dict[int, np.ndarray] | None = None):
        self.bin_tables = bin_tables or {}
        self.metric = GridSampler(classes.max(axis=0) + 1, self.bin_tables).factors(classes)  # [N, K]
        self.count, self.size = self.metric.shape[1], len(self.metric)
        self._strata = []
        for k in range(self.count):
            order = np.argsort(self.metric[:, k], kind="stable")
            values, starts, counts = np.unique(self.metric[order, k], return_index=True, return_counts=True)
            self._strata.append((order, values, starts, counts))

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return rng.integers(self.size, size=count)

    def factors(self, keys: np.ndarray) -> np.ndarray:
        return self.metric[keys]

    def _sharing(self, rng, k: int, rows: np.ndarray) -> np.ndarray:
        """For each row, a row drawn uniformly among those with the same value of factor k."""
        order, values, starts, counts = self._strata[k]
        value = np.searchsorted(values, self.metric[rows, k])
        return order[starts[value] + rng.integers(0, counts[value])]

    def sharing_pairs(self, rng, count: int, group: int):
        labels = rng.integers(self.count, size=count)
        first = rng.integers(self.size, size=(count, group))
        second = np.empty_like(first)
        for k in range(self.count):
            chosen = labels == k
            second[chosen] = self._sharing(rng, k, first[chosen].ravel()).reshape(-1, group)
        return labels, first.ravel(), second.ravel()

    def fixed_groups(self, rng, count: int, group: int):
        labels = rng.integers(self.count, size=count)
        anchors = rng.integers(self.size, size=count)
        rows = np.empty((count, group), dtype=np.int64)
        for k in range(self.count):
            chosen = labels == k
            rows[chosen] = self._sharing(rng, k, np.repeat(anchors[chosen], group)).reshape(-1, group)
        return labels, rows.ravel()

    def strata(self, rng, k: int, per_value: int):
        order, values, starts, counts = self._strata[k]
        picks = starts[:, None] + rng.integers(0, counts[:, None], size=(len(values), per_value))
        return order[picks].ravel(), len(values)


class RowSampler:
    """A dataset without factors (CelebA, MNIST): keys are dataset rows, drawn uniformly; there are no factors."""

    mode, count, bin_tables = "rows", 0, {}

    def __init__(self, size: int):
        self.size = size

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return rng.integers(self.size, size=count)

    def factors(self, keys: np.ndarray) -> None:
        return None


def bin_tables(dataset) -> dict[int, np.ndarray]:
    """For each continuous factor, its class -> bin: disentanglement_lib's discretiser (`_histogram_discretize`),
    HISTOGRAM_BINS equal-width bins over the range of the factor's values (`factor_values`, else class indices)."""
    tables = {}
    for k, size in enumerate(dataset.factor_sizes):
        if size > CONTINUOUS:
            known = getattr(dataset, "factor_values", None)
            values = np.asarray(known[k] if known is not None else np.arange(size), dtype=np.float64)
            tables[k] = np.digitize(values, np.histogram(values, HISTOGRAM_BINS)[1][:-1]) - 1
    return tables


def sampler_for(dataset) -> GridSampler | ObservedSampler | RowSampler:
    """The complete-grid protocol where every combination has one image (dSprites), observed pairs otherwise, and
    uniform rows for a dataset without factors."""
    if getattr(dataset, "factor_sizes", None) is None:
        return RowSampler(len(dataset))
    tables = bin_tables(dataset)
    if getattr(dataset, "complete_grid", True):
        return GridSampler(dataset.factor_sizes, tables)
    return ObservedSampler(dataset.latents_classes[:, 1:].cpu().numpy(), tables)


MODES = {("grid", "sampling"): "full grid", ("grid", "strata"): "full grid", ("grid", "interventions"): "full grid",
         ("observed", "sampling"): "images sharing the fixed value", ("observed", "strata"): "images sharing the value",
         ("grid", "pairs"): "observed pairs", ("observed", "pairs"): "observed pairs", ("rows", "pairs"): "images",
         ("grid", "uniform"): "full grid", ("observed", "uniform"): "observed images"}


def describe(sampler, dataset, metrics: dict) -> dict:
    """What metrics.yaml records beside the scores: how each metric that ran drew its images (`metrics`: name →
    its Metric), and the bins of continuous factors."""
    used = {name: MODES[(sampler.mode, metric.draws)] for name, metric in metrics.items()}
    binned = {dataset.factor_names[k]: f"{HISTOGRAM_BINS} equal-width bins" for k in sorted(sampler.bin_tables)}
    return {"sampling": used, "binned": binned}


def summary(scores: dict) -> str:
    """`describe`'s record as one line: scores grouped by how they drew their images, then the binned factors."""
    groups: dict[str, list[str]] = {}
    for name, mode in scores["sampling"].items():
        groups.setdefault(mode, []).append(name)
    text = "; ".join(f"{', '.join(names)}: {mode}" for mode, names in groups.items()) or "nothing"
    bins = ", ".join(f"{name} in {how}" for name, how in scores["binned"].items())
    return f"images drawn as {text}" + (f"; binned: {bins}" if bins else "")
