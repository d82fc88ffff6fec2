"""Downstream task accuracy (betavae/evaluation/scores/downstream_task.py) on constructed codes."""
import pytest

from betavae.evaluation.scores.downstream_task import BOOSTED_TREES, LOGISTIC_REGRESSION, sizes
from betavae.evaluation.scores.dci import compute as dci
from metric_cases import SIZES, context


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("metric", [LOGISTIC_REGRESSION, BOOSTED_TREES], ids=lambda m: m.name)
def test_factors_are_predicted_from_informative_codes_and_not_from_noise(metric):
    largest = sizes()[-1]
    prefix = f"{metric.name}:{largest}"
    identity, noise = metric.compute(context("identity")), metric.compute(context("noise"))
    assert identity[f"{prefix}:mean_test_accuracy"] > 0.9 and identity[f"{prefix}:min_test_accuracy"] > 0.8
    assert noise[f"{prefix}:mean_test_accuracy"] < 1 / SIZES[0] + 0.2
    keys = {f"{metric.name}:{n}:{kind}" for n in sizes() for kind in (
        "mean_train_accuracy", "mean_test_accuracy", "min_train_accuracy", "min_test_accuracy",
        *(f"{split}_accuracy_factor_{k}" for split in ("train", "test") for k in range(len(SIZES))))}
    assert set(identity) == keys


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_largest_boosted_trees_are_dci_s_own():
    grid = context("rotated")
    scores, informativeness = BOOSTED_TREES.compute(grid), dci(grid)["dci_informativeness"]
    assert scores[f"downstream_task_boosted_trees:{sizes()[-1]}:mean_test_accuracy"] == pytest.approx(informativeness)
    assert len(grid._shared) == 1  # fitted once, for both
