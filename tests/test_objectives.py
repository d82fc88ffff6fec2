"""Closed-form checks of every objective on hand-built μ, log σ² and z, and of FactorVAE's discriminator."""
import math

import pytest
import torch

from losses import (OBJECTIVES, Discriminator, FactorObjective, covariance, discriminator_loss, discriminator_tc,
                    kl_decomposition, log_density_gaussian, log_importance_weights, make_objective, permute_dims)
from params import PRESETS, Params, UserError, build_params
from betavae.training import loop


def batch(seed=0, size=8, dims=3):
    """A binary image batch, decoder logits, and an encoding with a known KL."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(size, 1, 8, 8, generator=g).round()
    logits = torch.randn(size, 1, 8, 8, generator=g)
    mu, logvar = torch.ones(size, dims), torch.zeros(size, dims)   # KL = ½ per dimension
    z = mu + torch.randn(size, dims, generator=g)
    return x, logits, mu, logvar, z


def gaussian_total_correlation(cov: torch.Tensor) -> float:
    """TC of a Gaussian with covariance Σ: ½ (Σ_d log Σ_dd − log det Σ)."""
    return 0.5 * (torch.diagonal(cov).log().sum() - torch.logdet(cov)).item()


def test_vae_is_the_elbo_whatever_beta_says():
    x, logits, mu, logvar, z = batch()
    terms = OBJECTIVES["vae"](x, logits, mu, logvar, z, 0, Params(beta=50.0))
    assert terms["kl"].item() == pytest.approx(1.5)
    assert terms["loss"].item() == pytest.approx(terms["recon"].item() + 1.5, rel=1e-6)


def test_beta_h_normalised_beta_converts_with_latent_dim_over_pixels():
    x, logits, mu, logvar, z = batch()                 # 3 latents, 64 pixels: β_norm = 3β/64
    plain = OBJECTIVES["betaH"](x, logits, mu, logvar, z, 0, Params(beta=4.0))
    assert plain["beta"].item() == 4.0 and plain["beta_norm"].item() == pytest.approx(4.0 * 3 / 64)
    normalised = OBJECTIVES["betaH"](x, logits, mu, logvar, z, 0, Params(beta=0.375, beta_normalised=True))
    assert normalised["beta"].item() == pytest.approx(8.0) and normalised["beta_norm"].item() == pytest.approx(0.375)
    assert normalised["loss"].item() == pytest.approx(normalised["recon"].item() + 8.0 * 1.5, rel=1e-6)


def test_beta_b_is_gamma_times_distance_to_capacity_at_its_end_points():
    x, logits, mu, logvar, z = batch()                 # KL = 1.5 nats
    params = Params(objective="betaB", gamma=1000.0, capacity=25.0, capacity_start=0.0, capacity_steps=100)
    for step, capacity in [(0, 0.0), (50, 12.5), (100, 25.0), (1000, 25.0)]:
        terms = OBJECTIVES["betaB"](x, logits, mu, logvar, z, step, params)
        assert terms["capacity"].item() == pytest.approx(capacity) and terms["gamma"].item() == 1000.0
        expected = terms["recon"].item() + 1000.0 * abs(1.5 - capacity)
        assert terms["loss"].item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_btcvae_terms_sum_to_the_sampled_kl_and_loss_weights_each(estimator):
    torch.manual_seed(0)
    mu, logvar = torch.randn(16, 4), torch.randn(16, 4) * 0.3
    z = mu + torch.randn(16, 4) * (0.5 * logvar).exp()
    parts = kl_decomposition(z, mu, logvar, 1000, estimator)
    sampled_kl = (log_density_gaussian(z, mu, logvar).sum(1) - log_density_gaussian(z, 0 * z, 0 * z).sum(1)).mean()
    assert (parts["mi"] + parts["tc"] + parts["dim_kl"]).item() == pytest.approx(sampled_kl.item(), abs=1e-4)
    x, logits = torch.rand(16, 1, 4, 4).round(), torch.randn(16, 1, 4, 4)
    ones = Params(objective="btcvae", alpha=1.0, beta=1.0, gamma=1.0, tc_estimator=estimator)
    terms = OBJECTIVES["btcvae"](x, logits, mu, logvar, z, 0, ones, dataset_size=1000)
    assert terms["loss"].item() == pytest.approx((terms["recon"] + sampled_kl).item(), abs=1e-3)
    weighted = Params(objective="btcvae", alpha=2.0, beta=6.0, gamma=3.0, tc_estimator=estimator)
    terms = OBJECTIVES["btcvae"](x, logits, mu, logvar, z, 0, weighted, dataset_size=1000)
    expected = terms["recon"] + 2 * parts["mi"] + 6 * parts["tc"] + 3 * parts["dim_kl"]
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert {"mi", "tc", "dim_kl", "alpha", "beta", "gamma", "kl", "kl_per_dim"} <= set(terms)


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_total_correlation_is_zero_at_the_prior_small_when_factorised_and_right_when_correlated(estimator):
    g = torch.Generator().manual_seed(0)
    size, dims = 256, 3
    prior = torch.randn(size, dims, generator=g)       # q(z|x) = p(z) for every x: all three terms vanish
    for value in kl_decomposition(prior, 0 * prior, 0 * prior, 10_000, estimator).values():
        assert abs(value.item()) < 1e-5
    logvar = torch.full((size, dims), -2.0)
    factorised = torch.randn(size, dims, generator=g)
    z = factorised + torch.randn(size, dims, generator=g) * (0.5 * logvar).exp()
    assert abs(kl_decomposition(z, factorised, logvar, 10_000, estimator)["tc"].item()) < 0.3
    shared = torch.randn(size, 1, generator=g).expand(size, dims)   # every dimension encodes the same value
    z = shared + torch.randn(size, dims, generator=g) * (0.5 * logvar).exp()
    expected = gaussian_total_correlation(torch.ones(dims, dims) + math.exp(-2.0) * torch.eye(dims))  # ≈ 1.62
    assert kl_decomposition(z, shared, logvar, 10_000, estimator)["tc"].item() == pytest.approx(expected, abs=0.4)


def test_stratified_weights_are_a_distribution_with_one_over_n_on_the_own_sample():
    weights = log_importance_weights(5, 100).exp()
    assert torch.allclose(weights.sum(1), torch.ones(5))
    assert torch.allclose(torch.diagonal(weights), torch.full((5,), 0.01))
    assert weights[0, 1].item() == pytest.approx((100 - 4) / (100 * 4)) and weights[0, 2].item() == 0.25


def test_dip_regularisers_on_a_known_covariance():
    mu = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])      # Cov[μ] = [[1, 1], [1, 1]]
    logvar = torch.zeros(2, 2)                          # E[σ²] = I, so Cov_q(z) = [[2, 1], [1, 2]]
    x, logits = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    params = Params(lambda_od=3.0, lambda_d=7.0)
    assert torch.equal(covariance(mu), torch.ones(2, 2))
    first = OBJECTIVES["dipI"](x, logits, mu, logvar, mu, 0, params)
    assert first["dip_off_diagonal"].item() == pytest.approx(3.0 * 2) and first["dip_diagonal"].item() == 0.0
    second = OBJECTIVES["dipII"](x, logits, mu, logvar, mu, 0, params)
    assert second["dip_off_diagonal"].item() == pytest.approx(3.0 * 2)
    assert second["dip_diagonal"].item() == pytest.approx(7.0 * 2)      # (2 − 1)² per diagonal entry
    assert second["loss"].item() == pytest.approx((second["recon"] + second["kl"] + 6.0 + 14.0).item(), rel=1e-6)


def test_permute_dims_shuffles_each_column_within_itself():
    torch.manual_seed(0)
    z = torch.arange(40.0).view(20, 2)
    permuted = permute_dims(z)
    assert all(torch.equal(permuted[:, d].sort().values, z[:, d]) for d in range(2))
    assert not torch.equal(permuted, z)


@pytest.fixture
def one_thread():
    """Tiny networks run many times faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_discriminator_estimates_more_tc_for_correlated_than_independent_codes(one_thread):
    torch.manual_seed(0)

    def trained_estimate(correlated: bool) -> tuple[float, float]:
        discriminator = Discriminator(2, width=64, layers=2)
        optimizer = torch.optim.Adam(discriminator.parameters(), lr=3e-3)
        for _ in range(150):
            codes = torch.randn(128, 2)
            if correlated:                              # ρ = 0.95: TC = −½ log(1 − ρ²) ≈ 1.16 nats
                codes[:, 1] = 0.95 * codes[:, 0] + math.sqrt(1 - 0.95 ** 2) * codes[:, 1]
            loss = discriminator_loss(discriminator, codes)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return discriminator_tc(discriminator, codes).item(), loss.item()

    correlated_tc, correlated_loss = trained_estimate(True)
    independent_tc, independent_loss = trained_estimate(False)
    assert correlated_tc == pytest.approx(-0.5 * math.log(1 - 0.95 ** 2), abs=0.4) and abs(independent_tc) < 0.3
    assert correlated_loss < independent_loss          # only correlated codes can be told from their permutation


def test_factor_objective_adds_gamma_times_tc_and_updates_its_discriminator_in_train_step():
    torch.manual_seed(0)
    params = Params(objective="factor", gamma=30.0, latent_dim=3, batch_size=8)
    objective = make_objective(params, 100, torch.device("cpu"))
    assert isinstance(objective, FactorObjective)
    assert objective.optimizer.defaults["lr"] == 1e-4 and objective.optimizer.defaults["betas"] == (0.5, 0.9)
    x, logits, mu, logvar, z = batch(dims=3)
    terms = objective(x, logits, mu, logvar, z, 0, params)
    assert terms["loss"].item() == pytest.approx((terms["recon"] + terms["kl"] + 30.0 * terms["tc"]).item(), rel=1e-5)

    from models import VAE
    model = VAE(1, 3)
    model_optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    before = [p.clone() for p in objective.discriminator.parameters()]
    terms = loop.train_step(model, model_optimizer, objective, torch.rand(8, 1, 64, 64).round(), 0, params)
    assert "discriminator_loss" in terms and "tc" in terms
    assert all(not torch.equal(a, b) for a, b in zip(before, objective.discriminator.parameters()))
    assert objective.optimizer.state_dict()["state"][0]["step"].item() == 1


def test_make_objective_passes_the_dataset_size_to_btcvae_and_returns_plain_functions_otherwise():
    params = Params(objective="btcvae", tc_estimator="mss")
    objective = make_objective(params, 12_345, torch.device("cpu"))
    assert objective.keywords == {"dataset_size": 12_345}
    assert make_objective(Params(objective="dipI"), 10, torch.device("cpu")) is OBJECTIVES["dipI"]


@pytest.mark.parametrize("name", ["vae", "betaH", "betaB", "factor", "btcvae", "dipI", "dipII"])
def test_each_objective_has_a_dsprites_preset(name):
    params = build_params(f"{name}_dsprites")
    assert params.objective == name and params.dataset == "dsprites"
    assert PRESETS["betaB_dsprites"]["gamma"] == 1000.0 and PRESETS["dipI_dsprites"]["lambda_d"] == 100.0


@pytest.mark.parametrize("assignment", ["beta_schedule=warm", "tc_estimator=exact", "gamma_delay=-1",
                                        "schedule_ratio=1.5", "recon=poisson"])
def test_bad_objective_params_are_user_errors(assignment):
    with pytest.raises(UserError):
        build_params(None, None, [assignment])
