"""color_dsprites and noisy_dsprites: the statistics of disentanglement_lib's definitions, the same images whenever
they are drawn, and presets that train."""
import numpy as np
import pytest
import torch

import data
import main
from betavae.checkpoints import load_checkpoint
from params import build_params

ROWS = torch.tensor([0, 1, 777, 245760, 500_000, 737279])


def masks() -> np.ndarray:
    return data.render_dsprites(data.all_latent_classes()[ROWS.numpy()]).astype(bool)  # [6, 64, 64]


def test_colour_dsprites_is_one_colour_from_half_to_one_on_the_sprite_and_black_elsewhere():
    images, factors = data.DSpritesVariant("color_dsprites", 3, None).batch(ROWS)
    assert images.shape == (6, 3, 64, 64) and factors.shape == (6, 5)
    colours = []
    for image, mask in zip(images.numpy(), masks()):
        assert (image[:, ~mask] == 0).all()
        on = image[:, mask]                                    # [3, pixels]
        assert (on == on[:, :1]).all() and (on >= 0.5).all() and (on <= 1).all()
        colours.append(on[:, 0])
    assert len({tuple(c) for c in colours}) == 6                # one colour per image
    assert np.ptp(np.array(colours), axis=1).max() > 0.05       # the channels differ: colours, not greys


def test_noisy_dsprites_is_white_on_uniform_noise():
    images, _ = data.DSpritesVariant("noisy_dsprites", 3, None).batch(ROWS)
    for image, mask in zip(images.numpy(), masks()):
        assert (image[:, mask] == 1).all()
        off = image[:, ~mask]                                  # [3, pixels]
        assert (off >= 0).all() and (off < 1).all()
        assert abs(off.mean() - 0.5) < 0.02 and abs(off.var() - 1 / 12) < 0.01   # U(0, 1): mean 1/2, variance 1/12
        assert not np.array_equal(off[0], off[1])              # per channel


@pytest.mark.parametrize("variant", ["color_dsprites", "noisy_dsprites"])
def test_an_image_is_a_function_of_its_index_and_the_seed(variant):
    dataset = data.DSpritesVariant(variant, 3, None)
    first = dataset.batch(ROWS)[0]
    torch.manual_seed(123)                                     # the global random state plays no part
    again = data.DSpritesVariant(variant, 3, None).batch(ROWS.flip(0))[0].flip(0)
    assert torch.equal(first, again)
    by_classes = dataset.images(dataset.latents_classes[ROWS])
    assert torch.equal(first, by_classes)                      # the metrics' route draws the same pixels
    assert not torch.equal(first, data.DSpritesVariant(variant, 4, None).batch(ROWS)[0])


@pytest.mark.parametrize("variant", ["color", "noisy"])
def test_the_presets_train_a_three_channel_model(tmp_path, variant):
    params = build_params(f"betaH_{variant}_dsprites")
    assert params.dataset == f"{variant}_dsprites" and params.recon == "bernoulli" and params.beta == 4.0
    assert main.main(["--preset", f"betaH_{variant}_dsprites", "--set", f"out_dir={tmp_path}", "--set", "run_name=r",
                      "--set", "steps=2", "--set", "batch_size=4", "--set", "log_every=1", "--set", "device=cpu",
                      "--set", "traverse_samples=8", "--set", "metrics=false", "--set", "factor_samples=0",
                      "--set", "threads=1"]) == 0
    assert (tmp_path / "r" / "checkpoint.pt").is_file()
    assert load_checkpoint(str(tmp_path / "r" / "checkpoint.pt"))["channels"] == 3


def test_a_resumed_noisy_run_sees_the_images_of_an_uninterrupted_one(tmp_path):
    def run(name, steps):
        return ["--set", f"out_dir={tmp_path}", "--set", f"run_name={name}", "--set", "dataset=noisy_dsprites",
                "--set", f"steps={steps}", "--set", "batch_size=4", "--set", "log_every=1", "--set", "device=cpu",
                "--set", "sample_every=100", "--set", "checkpoint_every=100", "--set", "traverse_samples=8",
                "--set", "metrics=false", "--set", "factor_samples=0", "--set", "threads=1"]
    assert main.main(run("whole", 6)) == 0
    assert main.main(run("split", 3)) == 0
    assert main.main(["--resume", str(tmp_path / "split"), "--set", "steps=6"]) == 0
    whole, split = ((tmp_path / name / "log.csv").read_text().splitlines() for name in ("whole", "split"))
    assert split == whole and len(whole) == 7


def test_scream_inverts_the_sprite_over_a_crop_of_the_picture_averaged_with_a_colour():
    from betavae.sources.variants import scream, uniform

    picture = torch.rand(3, 100, 120, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, :, 20:30, 20:30] = 1
    index = torch.tensor([5, 9])
    out = scream(picture, mask, index, seed=3)
    draws = uniform(index, 5, 3)
    for b in range(2):
        top, left = int(draws[b, 0] * 36), int(draws[b, 1] * 56)
        background = (picture[:, top:top + 64, left:left + 64] + draws[b, 2:, None, None]) / 2
        expected = torch.where(mask[b].bool(), 1 - background, background)
        torch.testing.assert_close(out[b], expected)
    torch.testing.assert_close(scream(picture, mask, index, seed=3), out)          # a pure function of its inputs
    assert not torch.equal(scream(picture, mask, index, seed=4), out)


def test_scream_without_its_picture_is_one_sentence_naming_where_to_fetch_it(tmp_path):
    from betavae.errors import DataError
    from betavae.sources.sprites import DSpritesVariant

    with pytest.raises(DataError, match="upload.wikimedia.org.*The_Scream.jpg"):
        DSpritesVariant("scream_dsprites", 0, str(tmp_path))
