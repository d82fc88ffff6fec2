"""factor_means pictures: enough draws per factor value that the lines are not noise, and a ±1 std band."""
import math

import torch

from betavae.pictures import factors


class FakeFactors:
    """Factors shape (3), scale (6), orientation (40), posX, posY (2 each); an 'image' is its factor classes."""
    factor_names = ("shape", "scale", "orientation", "posX", "posY")
    factor_sizes = (3, 6, 40, 2, 2)
    channels = 1

    def __init__(self):
        grids = torch.meshgrid(*[torch.arange(s) for s in self.factor_sizes], indexing="ij")
        columns = [g.flatten() for g in grids]
        self.latents_classes = torch.stack([torch.zeros_like(columns[0])] + columns, 1)  # colour first

    def images(self, classes):
        return classes[:, 1:].float()


NOISE = 2.0


def noisy_encoder(x):
    """μ = (orientation + noise, scale + noise, 0): latent 0 reads orientation, latent 1 scale, latent 2 nothing."""
    return torch.stack([x[:, 2], x[:, 1], torch.zeros(len(x))], 1) + NOISE * torch.randn(len(x), 3) * \
        torch.tensor([1.0, 1.0, 0.0])


def test_means_are_within_their_standard_error_of_the_truth_and_it_shrinks_with_draws():
    torch.manual_seed(0)
    errors = {}
    for draws in (4, 256):
        statistics = factors.factor_statistics(noisy_encoder, FakeFactors(), draws=draws)
        assert set(statistics) == {"shape", "scale", "orientation"}   # position factors are the heat maps'
        mean, std = statistics["orientation"]
        assert mean.shape == std.shape == (40, 3)
        truth = torch.arange(40).float()
        errors[draws] = (mean[:, 0] - truth).std().item()
        # the spread is the encoder's noise, and each mean sits within a few standard errors of the truth
        assert abs(std[:, 0].mean().item() - NOISE) < 0.5 * NOISE
        assert ((mean[:, 0] - truth).abs() < 4 * NOISE / math.sqrt(draws) + 1e-6).all()
        assert torch.allclose(statistics["scale"][0][:, 1], torch.arange(6).float(), atol=4 * NOISE / math.sqrt(draws))
        assert (statistics["scale"][1][:, 2] == 0).all()   # a constant latent has no spread
    # the error of the means scales as 1 / sqrt(draws): 8x smaller for 64x the draws (within a factor 2)
    assert 4 < errors[4] / errors[256] < 16


def test_factor_pictures_are_written_with_the_configured_draws(tmp_path, monkeypatch):
    calls = []
    original = factors.factor_statistics
    monkeypatch.setattr(factors, "factor_statistics", lambda *a, **k: calls.append(a[2]) or original(*a, **k))
    paths = factors.save_factor_pictures(noisy_encoder, FakeFactors(), str(tmp_path), "_step000010",
                                         torch.tensor([1.0, 0.5, 0.0]), 0.01, samples=1, draws=32)
    assert calls == [32]
    assert [p.rsplit("/", 1)[1] for p in paths] == ["heatmaps_step000010.png", "factor_means_step000010.png"]
    assert all((tmp_path / name).stat().st_size > 1000 for name in ("heatmaps_step000010.png",
                                                                   "factor_means_step000010.png"))
    assert factors.FACTOR_DRAWS >= 64   # the default keeps the standard error at most 1/8 of the spread


def test_a_categorical_factor_is_drawn_by_name_and_never_joined(tmp_path, monkeypatch):
    from betavae.pictures import factors as pictures

    figures = []
    real = pictures.subplots
    monkeypatch.setattr(pictures, "subplots", lambda *a, **k: figures.append(real(*a, **k)) or figures[-1])
    means = {"shape": torch.rand(3, 4), "scale": torch.rand(6, 4)}
    spreads = {name: 0.1 * torch.ones_like(value) for name, value in means.items()}
    pictures.save_factor_plot(means, [0, 2], torch.ones(4), str(tmp_path / "f.png"), spreads, 8,
                              {"shape": ["square", "ellipse", "heart"]})
    shape, scale = figures[-1][1][0]
    assert [t.get_text() for t in shape.get_xticklabels()] == ["square", "ellipse", "heart"]
    assert all(line.get_linestyle() == "None" for line in shape.get_lines() if len(line.get_xdata()) > 1)
    assert all(float(t).is_integer() for t in scale.get_xticks())       # class indices, never 0.5
    assert any(len(line.get_xdata()) == 6 and line.get_linestyle() != "None" for line in scale.get_lines())
