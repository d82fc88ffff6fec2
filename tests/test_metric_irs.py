"""IRS (betavae/evaluation/scores/irs.py) on constructed codes."""
import numpy as np
import pytest

from betavae.evaluation.scores.irs import compute, irs_score
from metric_cases import context


def test_identity_codes_are_robust_noise_is_not():
    identity, rotated, noise = (compute(context(v))["IRS"] for v in ("identity", "rotated", "noise"))
    assert identity > 0.95 and noise < 0.3 and rotated < identity - 0.2


def test_active_dimensions_are_counted_not_summed():
    scores = compute(context("identity+constant"))
    assert scores["num_active_dims"] == 3.0  # disentanglement_lib's np.sum would add up the codes instead
    assert scores["IRS"] == pytest.approx(compute(context("identity"))["IRS"])


def test_a_latent_equal_to_its_factor_scores_one_with_the_full_quantile():
    factors = np.repeat(np.arange(5), 20)[:, None]
    assert irs_score(factors, factors.astype(float), quantile=1.0) == pytest.approx(1.0)
