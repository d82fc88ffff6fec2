"""Fairness (Locatello et al. 2019b, "On the Fairness of Disentangled Representations"), as disentanglement_lib's
`fairness.py`: how much a classifier's predictions of one factor change when another factor is intervened on.

It intervenes on factor values and renders the images they name, so it needs a dataset with a complete factor grid.
The per-factor predictors are the boosted trees DCI fits on the same 10,000 training points (fitted once).
"""
from __future__ import annotations

import numpy as np

from betavae.evaluation import protocol
from betavae.evaluation.context import Context, Metric
from betavae.evaluation.scores.dci import boosted_trees, predict


def inter_group_fairness(counts: np.ndarray) -> tuple[float, float]:
    """From prediction counts [predicted class, sensitive class]: the mean (weighted by each sensitive class's count)
    and the maximum total-variation distance between one sensitive class's prediction distribution and the overall."""
    counts = np.asarray(counts, dtype=np.float64)
    overall = counts.sum(axis=1) / counts.sum()
    per_class = counts.sum(axis=0)
    distances = np.abs(counts / per_class[None, :] - overall[:, None]).sum(axis=0) / 2.0
    return float(np.sum(distances * per_class) / per_class.sum()), float(np.max(distances))


def scores_dict(matrix: np.ndarray, prefix: str) -> dict[str, float]:
    """disentanglement_lib's `compute_scores_dict`: every (predicted, sensitive) pair, means and maxima over rows
    and columns, and their combinations; the diagonal is left out."""
    size = matrix.shape[0]
    result = {f"{prefix}:pred{i}:sens{j}": float(matrix[i, j]) for i in range(size) for j in range(size) if i != j}
    rows = [[matrix[i, j] for j in range(size) if j != i] for i in range(size)]
    columns = [[matrix[i, j] for i in range(size) if i != j] for j in range(size)]
    for i, row in enumerate(rows):
        result[f"{prefix}:pred{i}:mean_sens"], result[f"{prefix}:pred{i}:max_sens"] = float(np.mean(row)), float(np.max(row))
    for j, column in enumerate(columns):
        result[f"{prefix}:sens{j}:mean_pred"] = float(np.mean(column))
        result[f"{prefix}:sens{j}:max_pred"] = float(np.max(column))
    row_means, row_maxs = [np.mean(r) for r in rows], [np.max(r) for r in rows]
    column_means, column_maxs = [np.mean(c) for c in columns], [np.max(c) for c in columns]
    result.update({f"{prefix}:mean_sens:mean_pred": np.mean(column_means), f"{prefix}:mean_sens:max_pred": np.mean(column_maxs),
                   f"{prefix}:max_sens:mean_pred": np.max(column_means), f"{prefix}:max_sens:max_pred": np.max(column_maxs),
                   f"{prefix}:mean_pred:mean_sens": np.mean(row_means), f"{prefix}:mean_pred:max_sens": np.mean(row_maxs),
                   f"{prefix}:max_pred:mean_sens": np.max(row_means), f"{prefix}:max_pred:max_sens": np.max(row_maxs)})
    return {k: float(v) for k, v in result.items()}


def fairness(representation, sampler, models: list, y_train: np.ndarray, factor_sizes, seed: int = 0,
             per_class: int | None = None) -> dict[str, float]:
    """For every target factor i (its predictor `models[i]`) and sensitive factor j ≠ i: `per_class` (100) factor
    combinations drawn once, each rendered with j set to every value, the predictions of i counted per value of j."""
    per_class = per_class or protocol.count("fairness_per_class")
    rng, size = protocol.rng(seed, "fairness"), len(factor_sizes)
    mean, worst = np.zeros((size, size)), np.zeros((size, size))
    for i in range(size):
        predicted = int(max(y_train[:, i].max(), 0)) + 1  # classes of factor i as the metrics see it (bins too)
        for j in range(size):
            if i == j:
                continue
            original = sampler.sample(rng, per_class)
            codes = []
            for value in range(factor_sizes[j]):
                intervened = original.copy()
                intervened[:, j] = value
                codes.append(representation(intervened))
            # One prediction call for every value's rows (each row's prediction is its own): [values, per_class].
            predictions = predict(models[i], np.concatenate(codes), y_train[:, i]).astype(np.int64)
            counts = np.stack([np.bincount(row, minlength=predicted)[:predicted]
                               for row in predictions.reshape(factor_sizes[j], -1)], axis=1)
            mean[i, j], worst[i, j] = inter_group_fairness(counts)
    return {**scores_dict(mean, "mean_fairness"), **scores_dict(worst, "max_fairness")}


def compute(context: Context) -> dict:
    _, y_train, _, _ = context.split()
    return fairness(context.representation, context.sampler, boosted_trees(context), y_train, context.factor_sizes,
                    context.seed)


METRIC = Metric("fairness", compute, headline=("mean_fairness:mean_pred:mean_sens",),
                needs=frozenset({"factors", "grid"}), draws="interventions",
                reference="Locatello et al. 2019b; disentanglement_lib fairness.py (fairness study config)")
