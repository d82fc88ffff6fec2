"""Closed-form checks of the likelihoods, the KL, the schedule and the β-VAE objective."""
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from losses import OBJECTIVES, beta_vae, kl_normal, linear_schedule, reconstruction_nll
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
