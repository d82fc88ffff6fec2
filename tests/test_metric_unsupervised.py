"""The unsupervised scores (betavae/evaluation/scores/unsupervised.py): closed forms and constructed codes."""
import numpy as np
import pytest

from betavae.evaluation.scores.unsupervised import (compute, gaussian_total_correlation,
                                                    gaussian_wasserstein_correlation, unsupervised_scores)
from metric_cases import context


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.9])
def test_gaussian_scores_match_their_closed_forms(rho):
    cov = np.array([[1.0, rho], [rho, 1.0]])
    assert gaussian_total_correlation(cov) == pytest.approx(-0.5 * np.log(1 - rho ** 2))
    assert gaussian_wasserstein_correlation(cov) == pytest.approx(4 - 2 * (np.sqrt(1 + rho) + np.sqrt(1 - rho)))


def test_independent_codes_score_zero_correlated_codes_do_not():
    independent = compute(context("identity"))
    assert independent["gaussian_total_correlation"] == pytest.approx(0.0, abs=0.05)  # 100 points: sample noise
    assert independent["gaussian_wasserstein_correlation_norm"] == pytest.approx(0.0, abs=0.05)
    assert independent["mutual_info_score"] < 0.1  # the plug-in estimate on 100 points in 20 bins is biased up
    rng = np.random.default_rng(0)
    first = rng.normal(size=5000)
    correlated = unsupervised_scores(np.stack([first, first + 0.3 * rng.normal(size=5000), rng.normal(size=5000)], 1))
    assert correlated["gaussian_total_correlation"] > 0.5 and correlated["mutual_info_score"] > 0.2


def test_a_constant_latent_adds_nothing():
    with_constant, without = compute(context("noise+constant")), compute(context("noise"))
    assert with_constant["gaussian_total_correlation"] == pytest.approx(without["gaussian_total_correlation"])
    assert np.isfinite(list(with_constant.values())).all()
