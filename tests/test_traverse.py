"""Traversals, GIFs and factor pictures on models whose latents are known in closed form; the CLI on a saved checkpoint."""
import dataclasses

import pytest
import torch
from PIL import Image
from torch import nn

import data
from betavae.pictures import factors
import traverse
from betavae.pictures import traversals
from betavae.checkpoints import save_checkpoint
from models import VAE
from params import Params


class KnownEncoder(nn.Module):
    """μ = means + spread·(±1 alternating over images), log σ² = 0: KL_d = (means_d² + spread_d²) / 2 exactly."""

    def __init__(self, means, spread):
        super().__init__()
        self.means, self.spread = torch.tensor(means), torch.tensor(spread)

    def forward(self, x):
        sign = torch.where(torch.arange(len(x)) % 2 == 0, 1.0, -1.0)[:, None]  # [B, 1]
        mu = self.means + sign * self.spread                                    # [B, D]
        return mu, torch.zeros_like(mu)


class LinearDecoder(nn.Module):
    """Every pixel's logit is z · weights, so a decoded image says exactly which z made it."""

    def __init__(self, weights):
        super().__init__()
        self.weights = torch.tensor(weights)

    def forward(self, z):
        return (z @ self.weights)[:, None, None, None].expand(-1, 1, 64, 64)


class KnownModel(nn.Module):
    def __init__(self, means, spread, weights):
        super().__init__()
        self.encoder, self.decoder = KnownEncoder(means, spread), LinearDecoder(weights)
        self.anchor = nn.Parameter(torch.zeros(1))  # so next(model.parameters()) finds a device


def known_model():
    # KL per dimension: 0.5·(m² + s²) = [0.5, 8.0, 0.005, 2.0]; mean |μ| is largest for dimension 3 (m = 2),
    # while dimension 1 has the largest KL through its spread: sorting by KL and by |mean| must differ.
    return KnownModel([1.0, 0.0, 0.1, 2.0], [0.0, 4.0, 0.0, 0.0], [1.0, 0.5, 0.25, 0.125])


def test_latent_grid_rows_are_sorted_by_known_kl_and_inactive_ones_hidden(tmp_path):
    model, x = known_model(), torch.zeros(6, 1, 64, 64)
    assert traversals.save_latent_grid(model, x, str(tmp_path / "grid.png"), points=5) == [1, 3, 0, 2]
    assert (tmp_path / "grid.png").is_file()
    kept = traversals.save_latent_grid(model, x, str(tmp_path / "active.png"), points=5, active_kl=0.01,
                                     hide_inactive=True)
    assert kept == [1, 3, 0]  # KL 0.005 < 0.01
    everything = traversals.save_latent_grid(model, x, str(tmp_path / "none.png"), points=5, active_kl=100.0,
                                           hide_inactive=True)
    assert everything == [1, 3, 0, 2] and (tmp_path / "none.png").is_file()  # none active: all, greyed
    assert traversals.save_latent_grid(model, x, str(tmp_path / "chosen.png"), points=5, dims=[2, 0]) == [2, 0]


def test_traverse_rows_change_only_the_row_latent():
    model = known_model()
    values = traversals.traversal_values("sigma", 2.0, 5, torch.zeros(4), torch.ones(4), torch.zeros(1, 4))
    rows = traversals.traverse_rows(model, torch.zeros(4), values, [1, 3])
    assert rows.shape == (2, 5, 1, 64, 64)
    steps = torch.linspace(-2, 2, 5)
    torch.testing.assert_close(rows[0, :, 0, 0, 0], torch.sigmoid(0.5 * steps))
    torch.testing.assert_close(rows[1, :, 0, 0, 0], torch.sigmoid(0.125 * steps))


def test_traversal_ranges_in_closed_form():
    mean, std = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.5])
    observed = torch.tensor([[-1.0, 3.0], [2.0, 5.0], [0.5, 4.0]])
    sigma = traversals.traversal_values("sigma", 3.0, 3, mean, std, observed)
    torch.testing.assert_close(sigma, torch.tensor([[-3.0, 0.0, 3.0], [-0.5, 1.0, 2.5]]))
    quantile = traversals.traversal_values("quantile", 0.05, 2, mean, std, observed)
    torch.testing.assert_close(quantile, torch.tensor([[-1.6449, 1.6449], [1 - 0.82243, 1 + 0.82243]]), atol=1e-4,
                               rtol=0)
    torch.testing.assert_close(traversals.traversal_values("observed", 0, 2, mean, std, observed),
                               torch.tensor([[-1.0, 2.0], [3.0, 5.0]]))
    assert traversals.parse_range("sigma") == ("sigma", 3.0)
    assert traversals.parse_range("quantile:0.1") == ("quantile", 0.1) and traversals.parse_range("observed")[0] == "observed"
    for bad in ("sigma:-1", "quantile:0.7", "box:3", "sigma:x"):
        with pytest.raises(Exception, match="not understood"):
            traversals.parse_range(bad)


def test_highest_mean_traversal_picks_the_largest_absolute_mean_not_the_largest_kl(tmp_path):
    model, x = known_model(), torch.zeros(6, 1, 64, 64)
    assert traversals.save_highest_mean_traversal(model, x, str(tmp_path / "h.png"), points=4) == 3
    assert Image.open(tmp_path / "h.png").size == (4 * 66 + 2, 66 + 2)  # one row of 4 images, 2 px padding


def test_gif_has_a_frame_per_point_forth_and_back(tmp_path):
    model = known_model()
    values = traversals.traversal_values("sigma", 3.0, 6, torch.zeros(4), torch.ones(4), torch.zeros(1, 4))
    rows = traversals.traverse_rows(model, torch.zeros(4), values, [0, 1, 3])
    assert traversals.save_gif(rows, str(tmp_path / "t.gif")) == 10
    with Image.open(tmp_path / "t.gif") as gif:
        assert gif.n_frames == 10 and gif.size == (2 * (3 * 66 + 2), 2 * (66 + 2))


def centroid_encoder(x):
    """μ = (column centroid, row centroid, area) of the on pixels, in pixels: a stand-in for a disentangled encoder."""
    ink, centres = x[:, 0], torch.arange(64) + 0.5
    area = ink.sum((1, 2))
    return torch.stack([(ink.sum(1) * centres).sum(1) / area, (ink.sum(2) * centres).sum(1) / area, area], 1)


def test_heat_maps_have_one_cell_per_position_holding_the_mean_there():
    dataset = data.DSprites(None)
    maps = factors.position_heatmaps(centroid_encoder, dataset, samples=1)
    assert maps.shape == (3, 32, 32)
    centre = 16 + 32 * torch.arange(32) / 31  # the renderer's sprite centre for each position class
    assert (maps[0] - centre[None, :]).abs().max() < 3  # the heart's centroid sits off its centre by ~2 px
    assert (maps[1] - centre[:, None]).abs().max() < 3
    means = factors.factor_means(centroid_encoder, dataset, samples=4)
    assert {name: tuple(v.shape) for name, v in means.items()} == {"shape": (3, 3), "scale": (6, 3),
                                                                  "orientation": (40, 3)}
    assert (means["scale"][1:, 2] > means["scale"][:-1, 2]).all()  # area grows with scale


def test_no_factor_pictures_for_a_dataset_without_factors(tmp_path):
    class Faces:
        channels = 3
    assert factors.save_factor_pictures(centroid_encoder, Faces(), str(tmp_path), "", torch.ones(3), 0.01, 1) == []
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint in the format main.py's snapshot() writes, inside a run folder with a log."""
    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    params = Params(data_dir=str(run), traverse_samples=24, traverse_points=4, factor_samples=1, latent_dim=4)
    model = VAE(1, params.latent_dim)
    save_checkpoint(str(run / "checkpoint.pt"), {"model": model.state_dict(), "optimizer": {}, "step": 7, "rng": {},
                                                 "params": dataclasses.asdict(params), "channels": 1, "latent_dim": 4})
    (run / "log.csv").write_text("step,loss,beta,kl_0,kl_1,kl_2,kl_3\n5,9.0,4.0,0.1,0.2,0.0,0.3\n7,8.0,4.0,0.2,0.1,0.0,0.4\n")
    return run / "checkpoint.pt"


def test_cli_assets_writes_exactly_the_readme_pictures(checkpoint, tmp_path):
    assert traverse.main([str(checkpoint), "--assets", "--out", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"reconstructions.png", "traversal_grid.png", "traversal_grid.gif",
                                                    "heatmaps.png", "factor_means.png", "kl_per_dim.png"}
    with Image.open(tmp_path / "traversal_grid.gif") as gif:
        assert gif.n_frames <= 2 * 4 - 2


def test_cli_posterior_traversals_of_chosen_images(checkpoint, tmp_path):
    argv = [str(checkpoint), "--out", str(tmp_path), "--from", "posterior", "--indices", "3,700000", "--gif",
            "--dims", "2,0", "--range", "observed"]
    assert traverse.main(argv) == 0
    names = {p.name for p in tmp_path.iterdir()}
    for k in (0, 1):
        assert {f"traversal_grid_posterior{k}_step000007.png", f"traversal_grid_posterior{k}_step000007.gif"} <= names
    assert "traversal_highest_mean_step000007.gif" in names and "traversal_grid_step000007.png" not in names
    with Image.open(tmp_path / "reconstructions_step000007.png") as image:
        assert image.size == (2 * 66 + 2, 2 * 66 + 2)  # the two chosen images over their reconstructions


@pytest.mark.parametrize("argv, message", [
    (["--dims", "0,4"], "out of range"), (["--dims", "a"], "whole numbers"), (["--range", "box"], "not understood"),
    (["--indices", "737280"], "out of range"), (["--images", "0"], "must be positive")])
def test_cli_user_errors_exit_2_with_one_sentence(checkpoint, argv, message, capsys, tmp_path):
    code = traverse.main([str(checkpoint), "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_cli_foreign_checkpoint_exits_2(tmp_path, capsys):
    foreign = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, foreign)
    assert traverse.main([str(foreign)]) == 2
    err = capsys.readouterr().err
    assert "not a checkpoint of this repository" in err and err.count("\n") == 1


def test_the_traversal_gif_animates_the_active_latents_under_their_names(tmp_path, monkeypatch):
    from PIL import Image

    from betavae.pictures import traversals

    torch.manual_seed(0)
    model = VAE(1, 4).eval()
    monkeypatch.setattr(traversals, "kl_normal", lambda mu, logvar: torch.tensor([1.0, 0.0, 2.0, 0.001]))
    order = traversals.save_latent_grid(model, torch.rand(8, 1, 64, 64), str(tmp_path / "g.png"), 5,
                                        gif_path=str(tmp_path / "g.gif"))
    assert order[:2] == [2, 0]
    gif = Image.open(tmp_path / "g.gif")
    panel = (64 + 2) * 2                                   # a 64-pixel image and its 2-pixel gutter, doubled
    assert gif.size == (2 * panel + 4, panel + 4 + 16)     # two active latents, a 16-pixel label row on top
