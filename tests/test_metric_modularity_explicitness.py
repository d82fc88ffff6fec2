"""Modularity and explicitness (betavae/evaluation/scores/modularity_explicitness.py) on constructed codes."""
import numpy as np
import pytest

from betavae.evaluation.scores.modularity_explicitness import compute, modularity
from metric_cases import context


def test_modularity_of_known_information_matrices():
    assert modularity(np.eye(3)) == pytest.approx(1.0)
    assert modularity(np.ones((3, 3))) == pytest.approx(0.0)          # every code informs every factor equally
    assert modularity(np.array([[1.0, 0, 0], [0, 0, 0]])) == pytest.approx(0.5)  # an uninformative code scores 0
    assert modularity(np.array([[2.0, 1.0, 0.0]])) == pytest.approx(1 - 1 / (4 * 2))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_identity_codes_are_modular_and_explicit_rotated_less_modular_noise_not_explicit():
    score = {variant: compute(context(variant)) for variant in ("identity", "rotated", "noise", "identity+constant")}
    assert score["identity"]["modularity_score"] > 0.95
    assert score["identity"]["explicitness_score_test"] > 0.95
    assert score["rotated"]["modularity_score"] < score["identity"]["modularity_score"] - 0.3
    assert score["rotated"]["explicitness_score_test"] > 0.9       # a linear mix stays linearly decodable
    assert abs(score["noise"]["explicitness_score_test"] - 0.5) < 0.15  # ROC-AUC of chance
    # the constant code carries no information: it scores 0 and pulls the mean down by a quarter
    assert score["identity+constant"]["modularity_score"] == pytest.approx(
        score["identity"]["modularity_score"] * 3 / 4, abs=0.02)
