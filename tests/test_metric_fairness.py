"""Fairness (betavae/evaluation/scores/fairness.py): closed forms and constructed codes."""
import numpy as np
import pytest

from betavae.evaluation.scores.fairness import compute, inter_group_fairness, scores_dict
from metric_cases import context


def test_total_variation_of_known_counts():
    assert inter_group_fairness(np.array([[10, 10], [10, 10]])) == pytest.approx((0.0, 0.0))
    assert inter_group_fairness(np.array([[10, 0], [0, 10]])) == pytest.approx((0.5, 0.5))
    assert inter_group_fairness(np.array([[10, 0], [0, 30]])) == pytest.approx((0.375, 0.75))


def test_the_scores_dict_has_disentanglement_lib_s_keys():
    result = scores_dict(np.array([[0, 1, 2], [3, 0, 5], [6, 7, 0]], dtype=float), "mean_fairness")
    assert result["mean_fairness:pred0:sens2"] == 2 and result["mean_fairness:pred1:mean_sens"] == 4
    assert result["mean_fairness:mean_pred:mean_sens"] == pytest.approx(4.0)
    assert result["mean_fairness:max_pred:max_sens"] == 7 and len(result) == 6 + 4 * 3 + 8


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_independent_codes_are_fair_mixed_codes_are_not():
    fair, mixed = compute(context("identity")), compute(context("rotated"))
    assert fair["mean_fairness:mean_pred:mean_sens"] < 0.1
    assert mixed["mean_fairness:mean_pred:mean_sens"] > fair["mean_fairness:mean_pred:mean_sens"] + 0.1
