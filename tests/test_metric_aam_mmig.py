"""AAM and MMIG's estimators of I[z_j; v_k] (betavae/evaluation/mixture.py): quadrature equals the closed form of
Gaussian mixtures; the published estimator equals a direct evaluation of what its code computes, scrambled means
included; the metric picks the estimator from its option and refuses `published` where its code could not run."""
import math

import numpy as np
import pytest
import torch

from betavae.evaluation import mixture
from betavae.evaluation.context import Context, Skip
from betavae.evaluation.sampling import GridSampler, ObservedSampler
from betavae.evaluation.scores import aam_mmig

A, S = 1.5, 0.3


def grid_classes(sizes, repeat=1):
    classes = np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), -1).reshape(-1, len(sizes))
    return np.repeat(classes, repeat, axis=0)


def posterior_of(classes):
    """z_0 = ±A from the 2-valued v_0, z_1 = 0 (independent), z_2 = v_1 − 1 from the 3-valued v_1; σ = S."""
    mu = np.stack([np.where(classes[:, 0] == 1, A, -A), np.zeros(len(classes)), classes[:, 1] - 1.0], 1)
    return mu, np.full(mu.shape, math.log(S * S))


def mixture_information(means, s):
    grid = np.linspace(min(means) - 10 * s, max(means) + 10 * s, 400_001)
    density = np.mean([np.exp(-(grid - m) ** 2 / (2 * s * s)) / math.sqrt(2 * math.pi * s * s) for m in means], 0)
    return -np.trapezoid(density * np.log(np.maximum(density, 1e-300)), grid) - 0.5 * math.log(2 * math.pi * math.e * s * s)


def test_quadrature_equals_the_closed_form_and_an_independent_latent_carries_nothing():
    classes = grid_classes((2, 3))
    information = mixture.quadrature_information(*posterior_of(classes), classes, (2, 3))
    assert information.shape == (3, 2)
    assert information[0, 0] == pytest.approx(mixture_information([-A, A], S), abs=1e-6)
    assert information[2, 1] == pytest.approx(mixture_information([-1.0, 0.0, 1.0], S), abs=1e-6)
    for j, k in [(0, 1), (1, 0), (1, 1), (2, 0)]:
        assert abs(information[j, k]) < 1e-6
    assert aam_mmig.aam_from_information(information) == pytest.approx(1.0)


def test_quadrature_holds_for_narrow_posteriors_at_the_default_grid():
    classes = grid_classes((40,))
    mu = (classes[:, :1] / 39.0) * 6 - 3                      # 40 values over [−3, 3], σ 0.01 (0.15 apart)
    logvar = np.full(mu.shape, math.log(1e-4))
    information = mixture.quadrature_information(mu, logvar, classes, (40,))
    assert information[0, 0] == pytest.approx(math.log(40), abs=1e-4)   # well separated: I = H(v) exactly


def reference_published(mu, logvar, classes, sizes, seed, samples):
    """What disentangling-vae's evaluate.py computes, evaluated directly (no grid): the same random draws in the
    same order, means as samples, the [S, D] → [D, S] reshape, logsumexp over every component of the mixture."""
    generator = torch.Generator().manual_seed(seed)
    mu, logvar = torch.as_tensor(mu, dtype=torch.float64), torch.as_tensor(logvar, dtype=torch.float64)
    dims = mu.shape[1]

    def entropy(members):
        chosen = members[torch.randperm(len(members), generator=generator)[:samples]]
        points = mu[chosen].float().reshape(dims, -1).double()
        m, lv = mu[members], logvar[members]
        log_q = -0.5 * ((points.T[:, None, :] - m[None]) ** 2 * torch.exp(-lv)[None] + lv[None]) - 0.5 * math.log(
            2 * math.pi)
        return -(torch.logsumexp(log_q, 1) - math.log(len(m))).mean(0)

    everything = torch.arange(len(mu))
    marginal = entropy(everything)
    information = np.zeros((dims, len(sizes)))
    for k, size in enumerate(sizes):
        conditional = sum(entropy(everything[torch.as_tensor(classes[:, k]) == v]) for v in range(size)) / size
        information[:, k] = (marginal - conditional).numpy()
    return information


@pytest.mark.parametrize("dims", [1, 3])
def test_the_published_estimator_is_what_its_code_computes(dims):
    rng = np.random.default_rng(0)
    classes = grid_classes((2, 3), repeat=40)
    mu, logvar = posterior_of(classes)
    mu = (mu + 0.2 * rng.standard_normal(mu.shape))[:, :dims]
    logvar = (logvar + 0.3 * rng.standard_normal(logvar.shape))[:, :dims]
    got = mixture.published_information(mu, logvar, classes, (2, 3), seed=3, samples=60, points=4096)
    expected = reference_published(mu, logvar, classes, (2, 3), seed=3, samples=60)
    np.testing.assert_allclose(got, expected, atol=2e-4)


def test_the_published_estimator_scores_latents_at_other_latents_values():
    """One informative latent beside a constant one: the scramble scores each at the other's means, so it finds
    information neither the quadrature nor a transposing estimator would."""
    classes = grid_classes((2,), repeat=100)
    mu = np.stack([np.where(classes[:, 0] == 1, A, -A), np.full(len(classes), 4.0)], 1)
    logvar = np.full(mu.shape, math.log(S * S))
    honest = mixture.quadrature_information(mu, logvar, classes, (2,))
    published = mixture.published_information(mu, logvar, classes, (2,), samples=200)
    assert honest[0, 0] == pytest.approx(mixture_information([-A, A], S), abs=1e-6) and abs(honest[1, 0]) < 1e-6
    assert abs(published[0, 0] - honest[0, 0]) > 0.1


def context_on(sampler, sizes, estimator):
    def posterior(keys):
        keys = np.asarray(keys)
        classes = keys if sampler.mode == "grid" else sampler.factors(keys)
        return posterior_of(classes)
    return Context(lambda keys: posterior(keys)[0], sampler, 0, factor_sizes=sizes, posterior=posterior,
                   grid=sampler.mode == "grid", options={"aam_estimator": estimator})


def test_the_metric_reads_its_estimator_and_refuses_published_without_a_complete_grid():
    quadrature = aam_mmig.compute(context_on(GridSampler((2, 3)), (2, 3), "quadrature"))
    published = aam_mmig.compute(context_on(GridSampler((2, 3)), (2, 3), "published"))
    assert quadrature["aam"] == pytest.approx(1.0) and quadrature["aam"] != published["aam"]
    observed = ObservedSampler(grid_classes((2, 3), repeat=3)[:-2])
    assert 0.9 < aam_mmig.compute(context_on(observed, (2, 3), "quadrature"))["aam"] <= 1.0
    with pytest.raises(Skip, match="complete factor grid"):
        aam_mmig.compute(context_on(observed, (2, 3), "published"))


def test_traverse_prints_the_convergence_table_of_a_checkpoint(tmp_path, monkeypatch, capsys):
    import traverse
    from betavae.checkpoints import save_checkpoint
    from betavae.evaluation import convergence
    from models import VAE

    classes = grid_classes((3, 4))
    images = np.zeros((len(classes), 64, 64), dtype=np.uint8)
    for n, (row, column) in enumerate(classes):
        images[n, 8 + 16 * row:16 + 16 * row, 4 + 14 * column:12 + 14 * column] = 1
    np.savez(tmp_path / "bars.npz", imgs=images, latents_classes=classes)
    torch.manual_seed(0)
    model = VAE(1, 4)
    save_checkpoint(str(tmp_path / "checkpoint.pt"), {
        "model": model.state_dict(), "step": 1, "channels": 1, "latent_dim": 4,
        "params": {"dataset": str(tmp_path / "bars.npz"), "latent_dim": 4, "traverse_samples": 12}})
    monkeypatch.setattr(convergence, "SAMPLED", ((200, 100, 20),))
    assert traverse.main([str(tmp_path / "checkpoint.pt"), "--aam-convergence"]) == 0
    out = capsys.readouterr().out
    assert "| estimator | AAM | MMIG | seconds |" in out and "strata of 20 per value" in out
    assert "quadrature: every image (12), 2,048 points" in out and out.count("as published") == 5
