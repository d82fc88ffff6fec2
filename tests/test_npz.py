"""A user's npz in dSprites' layout: it trains and every metric scores it, a full and an incomplete grid record how
they drew their images, bad files stop with one sentence before a run folder exists, and a model's scores do not
depend on the route its images came by (a file or the built-in dSprites)."""
import numpy as np
import pytest
import torch
import yaml

import data
import main
import traverse
from betavae.errors import DataError
from betavae.evaluation import metrics, protocol, sampling
from betavae.sources import dsprites, npz
from models import VAE
from params import build_params

SIZES = (3, 2, 2, 4, 4)                                      # shape, scale, orientation, posX, posY
DSPRITES_CLASS = [[0, 1, 2], [0, 5], [0, 10], [0, 10, 20, 31], [0, 10, 20, 31]]  # the dSprites class of each class
EVERY_SCORE = {"mig", "aam", "mmig", "aam_histogram", "mmig_histogram", "sap", "beta_vae", "factor_vae",
               "dci_disentanglement", "dci_completeness", "dci_informativeness"}


@pytest.fixture(autouse=True)
def tiny_poster_counts(monkeypatch):
    monkeypatch.setattr(protocol, "SAMPLES", {**protocol.SAMPLES, "mig": 60, "split": 60, "aam_images": 60})


def grid_classes() -> np.ndarray:
    return np.indices(SIZES).reshape(len(SIZES), -1).T  # [192, 5]


def render(classes: np.ndarray) -> np.ndarray:
    """The dSprites images of small-grid classes: uint8 [N, 64, 64] in {0, 1}."""
    full = np.stack([np.zeros(len(classes), np.int64)] + [np.asarray(DSPRITES_CLASS[k])[classes[:, k]]
                                                          for k in range(len(SIZES))], axis=1)
    return data.render_dsprites(full)


def grid_file(tmp_path, name="grid.npz", keep=None, **extra) -> str:
    """The small grid's images and classes in a shuffled row order; `keep` rows only for an incomplete grid."""
    classes = grid_classes()
    order = np.random.default_rng(0).permutation(len(classes))[:keep]
    path = tmp_path / name
    np.savez(path, imgs=render(classes[order]), latents_classes=classes[order],
             latents_names=np.array(["shape", "scale", "orientation", "posX", "posY"]), **extra)
    return str(path)


def run_args(tmp_path, name, dataset, steps=3):
    return ["--set", f"out_dir={tmp_path / 'runs'}", "--set", f"run_name={name}", "--set", f"dataset={dataset}",
            "--set", f"steps={steps}", "--set", "batch_size=8", "--set", "log_every=1", "--set", "sample_every=100",
            "--set", "checkpoint_every=100", "--set", "traverse_samples=20", "--set", "device=cpu",
            "--set", "factor_samples=1", "--set", "threads=1", "--set", "metrics=default,aam_mmig"]


@pytest.mark.filterwarnings("ignore:The number of unique classes")  # DCI on a few dozen points
def test_a_full_grid_trains_scores_every_metric_and_draws_factor_pictures(tmp_path, capsys):
    path = grid_file(tmp_path)
    assert main.main(run_args(tmp_path, "full", path)) == 0
    run = tmp_path / "runs" / "full"
    saved = yaml.safe_load((run / "metrics.yaml").read_text())[3]
    assert EVERY_SCORE <= set(saved) and all(0 <= saved[k] <= 1 for k in EVERY_SCORE)
    assert saved["sampling"]["beta_vae"] == saved["sampling"]["factor_vae"] == "full grid"
    assert saved["sampling"]["mig"] == saved["sampling"]["sap"] == saved["sampling"]["dci"] == "observed pairs"
    assert saved["binned"] == {}
    assert (run / "heatmaps_step000003.png").is_file() and (run / "factor_means_step000003.png").is_file()
    output = capsys.readouterr()
    assert "need 0.8 MB of memory" in output.out
    assert output.err.count("images drawn as") == 1
    assert traverse.main([str(run / "checkpoint.pt"), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "heatmaps_step000003.png").is_file()
    assert (tmp_path / "again" / "traversal_grid_step000003.png").is_file()


@pytest.mark.filterwarnings("ignore:The number of unique classes")
def test_an_incomplete_grid_draws_from_images_sharing_the_fixed_value(tmp_path):
    path = grid_file(tmp_path, keep=150)
    assert main.main(run_args(tmp_path, "gaps", path, steps=2)) == 0
    saved = yaml.safe_load((tmp_path / "runs" / "gaps" / "metrics.yaml").read_text())[2]
    assert EVERY_SCORE <= set(saved)
    assert saved["sampling"]["beta_vae"] == saved["sampling"]["factor_vae"] == "images sharing the fixed value"
    assert saved["sampling"]["mig"] == "observed pairs"
    assert not (tmp_path / "runs" / "gaps" / "heatmaps_step000002.png").exists()  # a heat map needs every cell


def test_the_observed_sampler_keeps_the_fixed_value_and_draws_only_observed_rows():
    classes = grid_classes()[np.random.default_rng(1).permutation(192)[:100]]
    sampler = sampling.ObservedSampler(classes)
    rng = np.random.default_rng(0)
    labels, first, second = sampler.sharing_pairs(rng, 50, 3)
    shared = np.repeat(labels, 3)
    assert (classes[first, shared] == classes[second, shared]).all()
    assert (classes[first] != classes[second]).any(axis=1).mean() > 0.5   # the other factors vary
    labels, rows = sampler.fixed_groups(rng, 40, 4)
    values = classes[rows, np.repeat(labels, 4)].reshape(40, 4)
    assert (values == values[:, :1]).all() and rows.max() < 100


def test_a_continuous_factor_is_binned_into_twenty_equal_width_bins(tmp_path, capsys):
    rng = np.random.default_rng(0)
    angle = rng.permutation(150)                             # 150 distinct classes, > sampling.CONTINUOUS
    classes = np.stack([angle, rng.integers(0, 2, 150)], 1)
    images = (rng.random((150, 64, 64)) < 0.5).astype(np.uint8)
    path = tmp_path / "angles.npz"
    np.savez(path, imgs=images, latents_classes=classes, latents_names=np.array(["angle", "flip"]),
             latents_values=np.stack([angle * 0.01, classes[:, 1]], 1))
    dataset = data.NpzFactors(str(path))
    assert dataset.factor_sizes == (150, 2) and not dataset.complete_grid
    np.testing.assert_allclose(dataset.factor_values[0], np.arange(150) * 0.01)
    sampler = sampling.sampler_for(dataset)
    factors = sampler.factors(sampler.sample(np.random.default_rng(0), 500))
    assert set(np.unique(factors[:, 0])) == set(range(20)) and set(np.unique(factors[:, 1])) == {0, 1}
    scores = metrics.evaluate(VAE(1, 3), dataset, include_dci=False, progress=False)
    assert scores["binned"] == {"angle": "20 equal-width bins"}


def test_images_not_64_pixels_are_resized_with_a_notice(tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = tmp_path / "small.npz"
    np.savez(path, imgs=rng.random((6, 32, 32, 3)).astype(np.float32), latents_classes=np.arange(6)[:, None])
    dataset = data.NpzFactors(str(path))
    assert "resizing imgs from 32×32 to 64×64" in capsys.readouterr().out
    images, factors = dataset.batch(torch.arange(6))
    assert images.shape == (6, 3, 64, 64) and dataset.channels == 3 and 0 <= images.min() <= images.max() <= 1
    assert factors[:, 0].tolist() == list(range(6))


def test_uint8_pixels_are_read_as_binary_when_zero_or_one_and_over_255_otherwise(tmp_path):
    classes = np.arange(4)[:, None]
    for name, pixels, expected in [("binary", [0, 1], 1.0), ("bytes", [0, 255], 1.0), ("grey", [0, 51], 0.2)]:
        images = np.zeros((4, 64, 64), np.uint8)
        images[:, 0, :2] = pixels
        np.savez(tmp_path / f"{name}.npz", imgs=images, latents_classes=classes)
        x, _ = data.NpzFactors(str(tmp_path / f"{name}.npz")).batch(torch.arange(4))
        assert x[:, 0, 0, 1].tolist() == pytest.approx([expected] * 4) and x.max() == pytest.approx(expected)


BAD_FILES = {
    "missing key": (dict(imgs=np.zeros((4, 64, 64), np.uint8)), "has no 'latents_classes' array (it has: imgs)"),
    "lengths": (dict(imgs=np.zeros((4, 64, 64), np.uint8), latents_classes=np.zeros((3, 2), int)), "4 images but 3"),
    "per item 4-D": (dict(imgs=np.zeros((4, 8, 8, 3, 1), np.uint8), latents_classes=np.zeros((4, 2), int)),
                     "[N, H, W] or [N, H, W, C]"),
    "two channels": (dict(imgs=np.zeros((4, 8, 8, 2), np.uint8), latents_classes=np.zeros((4, 2), int)),
                     "C = 1 or 3"),
    "NaN": (dict(imgs=np.full((4, 8, 8), np.nan, np.float32), latents_classes=np.arange(8).reshape(4, 2)), "NaN"),
    "out of range": (dict(imgs=np.full((4, 8, 8), 1.5), latents_classes=np.arange(8).reshape(4, 2)), "outside [0, 1]"),
    "float classes": (dict(imgs=np.zeros((4, 64, 64), np.uint8), latents_classes=np.zeros((4, 2))),
                      "store integer class indices"),
}


@pytest.mark.parametrize("case", [*BAD_FILES, "missing file", "not an npz"])
def test_a_bad_file_stops_with_one_sentence_before_a_run_folder_exists(tmp_path, capsys, case):
    path = tmp_path / "bad.npz"
    if case in BAD_FILES:
        np.savez(path, **BAD_FILES[case][0])
    elif case == "not an npz":
        path.write_text("hello")
    assert main.main(run_args(tmp_path, "bad", str(path))) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and error.startswith("error: ") and error.endswith(".")
    expected = {"missing file": "No file at", "not an npz": "not an npz archive"}.get(case) or BAD_FILES[case][1]
    assert expected in error
    assert not (tmp_path / "runs").exists()


def test_a_factor_with_a_single_value_is_dropped_with_a_one_line_warning(tmp_path, capsys):
    classes = np.stack([np.zeros(192, np.int64), *grid_classes().T], 1)   # a constant first column, as dSprites
    path = tmp_path / "constant.npz"
    np.savez(path, imgs=render(grid_classes()), latents_classes=classes)
    dataset = data.NpzFactors(str(path))
    error = capsys.readouterr().err.strip()
    assert error == f"warning: factor 'factor_0' of {path} has a single value; it is dropped from the factors"
    assert dataset.factor_sizes == SIZES and dataset.complete_grid


def test_more_memory_than_available_is_refused_before_loading(tmp_path, monkeypatch):
    path = grid_file(tmp_path)
    monkeypatch.setattr(npz, "available_memory", lambda: 500_000)
    monkeypatch.setattr(npz, "_load", lambda *a: pytest.fail("loaded despite the refusal"))
    with pytest.raises(DataError, match=r"needs 0.8 MB of memory to load but only 0.5 MB is available"):
        data.NpzFactors(path)


def test_params_accept_an_npz_path_and_reject_a_missing_one(tmp_path):
    path = grid_file(tmp_path)
    assert build_params(assignments=[f"dataset={path}"]).dataset == path
    with pytest.raises(DataError, match="No file at"):
        build_params(assignments=[f"dataset={tmp_path / 'absent.npz'}"])


# ---------------------------------------------------------------- the route does not change the scores

class RenderedGrid:
    """The built-in route on the small grid: images rendered from their factor classes, no file, no lookup."""

    channels, factor_names, factor_sizes = 1, ("shape", "scale", "orientation", "posX", "posY"), SIZES

    def images(self, latents_classes: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(render(latents_classes[:, 1:].numpy())).float().unsqueeze(1)


@pytest.mark.filterwarnings("ignore:The number of unique classes")
def test_a_grid_scores_the_same_from_a_shuffled_file_as_rendered_from_its_factors(tmp_path):
    torch.manual_seed(0)
    model = VAE(1, 4)
    from_file = metrics.evaluate(model, data.NpzFactors(grid_file(tmp_path)), seed=2, progress=False, metrics="all")
    rendered = metrics.evaluate(model, RenderedGrid(), seed=2, progress=False, metrics="all")
    scores = {k: v for k, v in from_file.items() if k != "seconds"}
    assert scores == {k: v for k, v in rendered.items() if k != "seconds"}
    assert scores["beta_vae"] > 0 and len(EVERY_SCORE & set(scores)) == len(EVERY_SCORE)
    assert set(scores["skipped"]) == {"udr"} and "IRS" in scores and "mean_fairness:mean_pred:mean_sens" in scores


def test_dsprites_npz_scores_the_same_as_the_built_in_dataset(tmp_path, monkeypatch):
    """The real file's layout at full size (737,280 images, 6 factors, colour constant) in under 1 MB: image i is
    buffer[i : i + 4096]. DSprites reads it as its own npz; NpzFactors reads it as a user's file."""
    buffer = np.random.default_rng(2).integers(0, 2, 737280 + 64 * 64, dtype=np.uint8)
    images = np.lib.stride_tricks.as_strided(buffer, shape=(737280, 64, 64), strides=(1, 64, 1))
    arrays = {"imgs": images, "latents_classes": data.all_latent_classes()}
    np.savez(tmp_path / data.NPZ_NAME, imgs=np.zeros(1), latents_classes=np.zeros(1))
    monkeypatch.setattr(dsprites, "_read_npz", lambda path: arrays)
    monkeypatch.setattr(npz, "_load", lambda archive, path, name: arrays[name])
    monkeypatch.setattr(npz, "member_header", lambda archive, name: (arrays[name].shape, arrays[name].dtype))
    monkeypatch.setattr(npz, "available_memory", lambda: None)
    built_in, from_file = data.DSprites(str(tmp_path)), data.NpzFactors(str(tmp_path / data.NPZ_NAME))
    assert from_file.factor_names == built_in.factor_names and from_file.factor_sizes == built_in.factor_sizes
    assert from_file.complete_grid and built_in.source == "npz"
    rows = torch.tensor([0, 5, 4096, 737279])
    assert torch.equal(from_file.batch(rows)[0], built_in.batch(rows)[0])
    torch.manual_seed(0)
    model = VAE(1, 4)
    scores = [metrics.evaluate(model, d, include_dci=False, progress=False) for d in (built_in, from_file)]
    assert [{k: v for k, v in s.items() if k != "seconds"} for s in scores][0] == \
        {k: v for k, v in scores[1].items() if k != "seconds"}
