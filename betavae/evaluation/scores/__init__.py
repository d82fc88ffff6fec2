"""The registry of metrics: one module each, one entry each. Adding a metric is a module of this package that
defines a `Metric` (betavae/evaluation/context.py) and its line below; the `metrics` param, the run's evaluation,
the reports and the tests find it here."""
from __future__ import annotations

from betavae.errors import UserError
from betavae.evaluation.context import Metric
from betavae.evaluation.scores import (aam_mmig, beta_vae, dci, downstream_task, factor_vae, fairness, irs, mig,
                                       modularity_explicitness, sap, udr, unsupervised)

REGISTRY: dict[str, Metric] = {metric.name: metric for metric in (
    beta_vae.METRIC,
    factor_vae.METRIC,
    mig.METRIC,
    dci.METRIC,
    modularity_explicitness.METRIC,
    sap.METRIC,
    unsupervised.METRIC,
    aam_mmig.METRIC,
    downstream_task.LOGISTIC_REGRESSION,
    downstream_task.BOOSTED_TREES,
    irs.METRIC,
    fairness.METRIC,
    udr.METRIC,
)}

DEFAULT = tuple(name for name, metric in REGISTRY.items() if metric.default)
# Words the `metrics` param takes besides names: true = default, false/none = no scores.
GROUPS = {"default": DEFAULT, "all": tuple(REGISTRY), "none": ()}


def select(value) -> tuple[str, ...]:
    """The metric names a `metrics` param value selects: true/false, default, all, none, or names and groups joined
    by commas ("default,aam_mmig"). An unknown word is a UserError naming the closest valid ones."""
    import difflib

    if value is True:
        value = "default"
    if value is False or value is None:
        return ()
    chosen: list[str] = []
    for word in (w.strip() for w in str(value).split(",") if w.strip()):
        if word in GROUPS:
            chosen += GROUPS[word]
        elif word in REGISTRY:
            chosen.append(word)
        else:
            close = difflib.get_close_matches(word, [*GROUPS, *REGISTRY], n=3, cutoff=0.5)
            raise UserError(f"Param 'metrics' names an unknown metric '{word}'; choose from "
                            f"{', '.join(close or [*GROUPS, *REGISTRY])} (names or groups, joined by commas).")
    return tuple(name for name in REGISTRY if name in chosen)  # registry order, each once


def headline(scores: dict) -> dict:
    """The scores reports show: each metric's headline keys (and their `sampled_` twins) that `scores` holds."""
    keys = [key for metric in REGISTRY.values() for key in metric.headline_keys()]
    return {k: scores[k] for prefix in ("", "sampled_") for k in (prefix + key for key in keys) if k in scores}
