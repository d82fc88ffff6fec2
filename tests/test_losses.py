"""Closed-form checks of the likelihoods, the KL, every schedule shape and the β-VAE objective."""
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from losses import OBJECTIVES, beta_vae, kl_normal, linear_schedule, reconstruction_nll, schedule_value, weight_at
from params import Params


def test_kl_matches_torch_distributions_and_is_zero_at_the_prior():
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 4), torch.randn(5, 4)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).mean(0)
    assert torch.allclose(kl_normal(mu, logvar), expected, atol=1e-6)
    assert torch.equal(kl_normal(torch.zeros(3, 2), torch.zeros(3, 2)), torch.zeros(2))
    # One dimension, μ = 1, σ = 1: KL = ½.
    assert kl_normal(torch.ones(1, 1), torch.zeros(1, 1)).item() == pytest.approx(0.5)


def test_bernoulli_nll_sums_pixels_and_averages_batch():
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    logits = torch.zeros(2, 2)                 # p = ½ everywhere: each pixel costs log 2
    assert reconstruction_nll(x, logits, "bernoulli").item() == pytest.approx(2 * math.log(2))


def test_gaussian_nll_with_std_one_over_root_two_is_summed_squared_error():
    x = torch.tensor([[0.2, 0.9, 0.5]])
    logits = torch.zeros(1, 3)                 # mean ½
    sse = ((x - 0.5) ** 2).sum().item()
    assert reconstruction_nll(x, logits, "gaussian", std=2 ** -0.5).item() == pytest.approx(sse, rel=1e-5)
    assert reconstruction_nll(x, logits, "gaussian", std=1.0).item() == pytest.approx(sse / 2, rel=1e-5)


@pytest.mark.parametrize("start, end", [(0.0, 10.0), (100.0, 0.0)])
def test_linear_schedule_end_points_in_both_directions(start, end):
    assert linear_schedule(0, start, end, 40_000) == start
    assert linear_schedule(20_000, start, end, 40_000) == pytest.approx((start + end) / 2)
    assert linear_schedule(40_000, start, end, 40_000) == end
    assert linear_schedule(90_000, start, end, 40_000) == end
    assert linear_schedule(5, start, end, 0) == end  # no annealing: constant


def test_beta_vae_is_recon_plus_beta_times_kl_and_follows_the_schedule():
    torch.manual_seed(1)
    x = torch.rand(4, 1, 8, 8).round()
    logits, mu, logvar = torch.randn(4, 1, 8, 8), torch.randn(4, 3), torch.randn(4, 3)
    params = Params(beta=0.0, beta_start=100.0, anneal_steps=40)
    at_half = beta_vae(x, logits, mu, logvar, mu, 20, params)
    assert at_half["beta"].item() == pytest.approx(50.0)
    assert at_half["loss"].item() == pytest.approx((at_half["recon"] + 50.0 * at_half["kl"]).item(), rel=1e-6)
    assert at_half["kl"].item() == pytest.approx(at_half["kl_per_dim"].sum().item())
    vae = OBJECTIVES["vae"](x, logits, mu, logvar, mu, 20, params)
    assert vae["loss"].item() == pytest.approx((vae["recon"] + vae["kl"]).item(), rel=1e-6)


def test_laplace_nll_is_absolute_error_over_its_scale():
    x = torch.tensor([[0.2, 0.9, 0.5]])
    logits = torch.zeros(1, 3)                 # mean ½
    sae = (x - 0.5).abs().sum().item()
    # std σ ↔ Laplace scale b = σ/√2; σ = √2 gives b = 1: the NLL is the summed absolute error.
    assert reconstruction_nll(x, logits, "laplace", std=2 ** 0.5).item() == pytest.approx(sae, rel=1e-5)
    assert reconstruction_nll(x, logits, "laplace", std=2 ** -0.5).item() == pytest.approx(2 * sae, rel=1e-5)
    with pytest.raises(ValueError):
        reconstruction_nll(x, logits, "poisson")


def test_constant_schedule_ignores_start_delay_and_steps():
    assert all(schedule_value("constant", s, 7.0, 3.0, 100, delay=10) == 3.0 for s in (0, 5, 50, 500))


@pytest.mark.parametrize("start, end", [(0.0, 10.0), (100.0, 0.0)])
def test_cosine_schedule_follows_half_a_cosine(start, end):
    assert schedule_value("cosine", 0, start, end, 400) == start
    quarter = start + (end - start) * (1 - math.cos(math.pi / 4)) / 2
    assert schedule_value("cosine", 100, start, end, 400) == pytest.approx(quarter)
    assert schedule_value("cosine", 200, start, end, 400) == pytest.approx((start + end) / 2)
    assert schedule_value("cosine", 400, start, end, 400) == end
    assert schedule_value("cosine", 10**6, start, end, 400) == end


def test_cyclical_schedule_restarts_each_cycle_and_holds_after_its_ramp():
    # Fu et al. 2019: 4 cycles of 100 steps over 400 steps, ramping over the first half (R = 0.5) of each.
    values = [schedule_value("cyclical", s, 0.0, 1.0, 400, cycles=4, ratio=0.5) for s in range(0, 500)]
    for cycle in range(4):
        base = 100 * cycle
        assert values[base] == 0.0                          # each cycle starts from `start`
        assert values[base + 25] == pytest.approx(0.5)      # half-way up its 50-step ramp
        assert values[base + 50] == 1.0 and values[base + 99] == 1.0
    assert values[400:] == [1.0] * 100                      # after the schedule: `end` for good
    assert schedule_value("cyclical", 50, 0.0, 1.0, 400, cycles=2, ratio=1.0) == pytest.approx(0.25)


@pytest.mark.parametrize("shape", ["linear", "cosine", "cyclical"])
def test_delay_holds_start_then_shifts_the_whole_schedule(shape):
    delayed = [schedule_value(shape, s, 2.0, 8.0, 100, delay=30) for s in range(0, 200)]
    plain = [schedule_value(shape, s, 2.0, 8.0, 100) for s in range(0, 170)]
    assert delayed[:31] == [2.0] * 31
    assert delayed[30:] == pytest.approx(plain)


def test_weight_at_reads_each_weight_from_its_own_params():
    params = Params(gamma=10.0, gamma_start=0.0, gamma_steps=100, gamma_schedule="cosine",
                    capacity=20.0, capacity_start=5.0, capacity_steps=10, capacity_delay=10)
    assert weight_at(params, "gamma", 50) == pytest.approx(5.0)
    assert weight_at(params, "capacity", 10) == 5.0 and weight_at(params, "capacity", 15) == pytest.approx(12.5)
    assert weight_at(params, "capacity", 20) == 20.0
    assert weight_at(Params(beta=6.0), "beta", 12345) == 6.0           # beta_start None: constant
    assert weight_at(Params(gamma=3.0, gamma_steps=50), "gamma", 1) == 3.0
