"""Every metric of the registry runs from a Context and gives its headline keys, or skips with one line saying why:
a metric is tested the moment it is registered."""
import math

import numpy as np
import pytest

from betavae.errors import UserError
from betavae.evaluation import metrics
from betavae.evaluation.context import Context, Skip
from betavae.evaluation.sampling import RowSampler
from betavae.evaluation.scores import DEFAULT, REGISTRY, select
from metric_cases import context


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_metric_scores_a_grid_or_says_why_not(name):
    metric = REGISTRY[name]
    grid = context("identity")
    if grid.missing(metric.needs):
        with pytest.raises(Skip):
            metric.compute(grid)
        assert "models" in metric.needs
        return
    scores = metric.compute(grid)
    assert set(metric.headline_keys()) <= set(scores)
    assert all(isinstance(v, float) and math.isfinite(v) for v in scores.values())


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_without_factors_only_metrics_that_need_none_run(name):
    unlabelled = Context(lambda rows: np.random.default_rng(1).normal(size=(len(rows), 3)), RowSampler(50), 0)
    why = unlabelled.missing(REGISTRY[name].needs)
    assert (why is None) == (name == "unsupervised")


def test_the_selection_words():
    assert DEFAULT == ("beta_vae", "factor_vae", "mig", "dci", "modularity_explicitness", "sap", "unsupervised")
    assert select(True) == DEFAULT and select("default") == DEFAULT and select(False) == () == select("none")
    assert select("all") == tuple(REGISTRY) and select("sap,mig") == ("mig", "sap")
    assert select("default,aam_mmig") == DEFAULT[:6] + ("unsupervised", "aam_mmig")
    with pytest.raises(UserError, match="closest|choose from mig"):
        select("mgi")


def test_a_failing_metric_is_skipped_with_its_reason_and_the_others_kept(monkeypatch, tmp_path):
    import torch

    from models import VAE
    from test_metrics import TinyFactorData

    broken = REGISTRY["sap"].__class__("sap", lambda context: 1 / 0, headline=("sap",), needs=frozenset({"factors"}))
    monkeypatch.setitem(REGISTRY, "sap", broken)
    torch.manual_seed(0)
    lines = []
    scores = metrics.record(VAE(1, 4), TinyFactorData(), str(tmp_path), 1, say=lines.append, metrics="mig,sap")
    assert "mig" in scores and "sap" not in scores
    assert lines[0] == "metric sap failed (ZeroDivisionError: division by zero); the other scores are kept"
