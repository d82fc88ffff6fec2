"""UDR (betavae/evaluation/scores/udr.py) on constructed posteriors."""
import numpy as np
import pytest

from betavae.evaluation.context import Skip
from betavae.evaluation.scores.udr import relative_strength, udr
from metric_cases import HADAMARD

RNG = np.random.default_rng(0)
FACTORS = RNG.uniform(-1, 1, size=(1000, 3))
SMALL = np.full((1000, 3), np.log(0.01))  # a narrow posterior: KL well above the 0.01 filter


def posterior(mu, logvar=SMALL):
    return mu, logvar


def test_relative_strength_of_known_matrices():
    assert relative_strength(np.eye(3)) == pytest.approx(1.0)
    assert relative_strength(np.ones((3, 3))) == pytest.approx(1 / 3)


def test_models_equal_up_to_permutation_and_sign_agree_mixed_ones_do_not():
    same = [posterior(FACTORS), posterior(-FACTORS[:, [2, 0, 1]] * 3), posterior(FACTORS + 0.01 * RNG.normal(size=FACTORS.shape))]
    scores = udr(same)
    # Lasso(alpha=0.1) shrinks each coefficient of standardised codes by 0.1: a perfect match scores 0.9²/0.9
    assert min(scores["udr_lasso"]) > 0.85 and min(scores["udr_spearman"]) > 0.85  # 1,000 points: chance correlations
    mixed = udr([posterior(FACTORS), posterior(FACTORS @ HADAMARD)])
    assert max(mixed["udr_spearman"]) < 0.7 and max(mixed["udr_lasso"]) < 0.8


def test_an_inactive_latent_is_left_out():
    prior = np.zeros((1000, 1))  # μ = 0, σ = 1: KL 0
    with_inactive = [posterior(np.concatenate([FACTORS, prior], 1), np.concatenate([SMALL, prior], 1))] * 2
    assert udr(with_inactive)["udr_spearman"] == pytest.approx(udr([posterior(FACTORS)] * 2)["udr_spearman"])


def test_a_model_without_active_latents_scores_zero():
    prior = np.zeros((1000, 3))
    assert udr([posterior(FACTORS), posterior(prior, prior)])["udr_lasso"] == [0.0, 0.0]


def test_one_model_is_skipped_with_a_reason():
    with pytest.raises(Skip, match="two or more models"):
        udr([posterior(FACTORS)])


def test_spearman_matrix_is_scipy_s_pair_by_pair():
    from scipy.stats import spearmanr

    from betavae.evaluation.scores.udr import spearman_correlation

    mixed = FACTORS @ HADAMARD + 0.3 * RNG.normal(size=FACTORS.shape)
    expected = [[abs(spearmanr(FACTORS[:, i], mixed[:, j]).statistic) for j in range(3)] for i in range(3)]
    np.testing.assert_allclose(spearman_correlation(FACTORS, mixed), expected, atol=1e-12)


def test_traverse_computes_udr_for_run_folders_and_refuses_runs_on_other_data(tmp_path, capsys):
    import yaml

    import main
    import traverse

    runs = []
    for seed, latent_dim in [(0, 3), (1, 3), (2, 4)]:
        args = ["--set", f"out_dir={tmp_path}", f"data_dir={tmp_path}", f"run_name=r{seed}", "steps=2", "batch_size=8",
                "sample_every=100", "traverse_samples=10", "device=cpu", "metrics=false", "factor_samples=0",
                f"seed={seed}", f"latent_dim={latent_dim}"]
        assert main.main(args) == 0
        runs.append(str(tmp_path / f"r{seed}"))
    assert traverse.main([runs[0], runs[1], "--udr"]) == 0
    record = yaml.safe_load((tmp_path / "r0" / "udr.yaml").read_text())
    assert record["compared_with"] == ["r1"] and 0 <= record["udr_lasso"] <= 1
    assert "udr_spearman" in capsys.readouterr().out
    assert traverse.main([runs[0], runs[2], "--udr"]) == 2
    assert "latent_dim differs" in capsys.readouterr().err
    assert traverse.main([runs[0], "--udr"]) == 2 and traverse.main([runs[0], runs[1]]) == 2
