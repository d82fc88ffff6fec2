"""Tests for the dSprites latent bookkeeping, renderer geometry and DSprites loader."""

import math
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import data  # noqa: E402
from betavae.sources import dsprites


def render_one(shape: int, scale: int = 5, orientation: int = 0, pos_x: int = 15, pos_y: int = 15) -> np.ndarray:
    return data.render_dsprites(np.array([[0, shape, scale, orientation, pos_x, pos_y]]))[0]


def centroid(image: np.ndarray) -> tuple[float, float]:
    """(column, row) of the on pixels' centres."""
    rows, columns = np.nonzero(image)
    return columns.mean() + 0.5, rows.mean() + 0.5


def extent(image: np.ndarray) -> tuple[int, int]:
    """(width, height) of the on pixels' bounding box."""
    rows, columns = np.nonzero(image)
    return columns.max() - columns.min() + 1, rows.max() - rows.min() + 1


def test_all_latent_classes_layout():
    classes = data.all_latent_classes()
    assert classes.shape == (737280, 6) and classes.dtype == np.int64
    assert (classes[0] == 0).all()
    assert classes[-1].tolist() == [size - 1 for size in data.LATENT_SIZES]
    assert classes[1].tolist() == [0, 0, 0, 0, 0, 1]  # posY varies fastest
    assert classes[32].tolist() == [0, 0, 0, 0, 1, 0]
    assert classes[245760].tolist() == [0, 1, 0, 0, 0, 0]
    np.testing.assert_array_equal(data.classes_to_index(classes), np.arange(737280))
    assert data.classes_to_index(np.array([[0, 2, 3, 7, 5, 9]])).tolist() == [
        245760 * 2 + 40960 * 3 + 1024 * 7 + 32 * 5 + 9
    ]


def test_classes_to_values_and_possible_values():
    possible = data.latent_possible_values()
    assert list(possible) == list(data.LATENT_NAMES)
    assert [len(values) for values in possible.values()] == list(data.LATENT_SIZES)
    values = data.classes_to_values(np.array([[0, 2, 5, 39, 31, 0], [0, 0, 1, 10, 3, 4]]))
    assert values.dtype == np.float64
    np.testing.assert_allclose(values[0], [1.0, 3.0, 1.0, 2 * math.pi, 1.0, 0.0])
    np.testing.assert_allclose(values[1], [1.0, 1.0, 0.6, 10 * 2 * math.pi / 39, 3 / 31, 4 / 31])


def test_render_output_format():
    classes = data.all_latent_classes()[np.random.default_rng(0).integers(0, 737280, 50)]
    images = data.render_dsprites(classes)
    assert images.shape == (50, 64, 64) and images.dtype == np.uint8
    assert set(np.unique(images).tolist()) == {0, 1}
    assert (images.reshape(50, -1).sum(axis=1) > 0).all()


@pytest.mark.parametrize("shape", [0, 1])
@pytest.mark.parametrize("pos_x, pos_y", [(0, 0), (15, 15), (31, 7), (4, 31), (20, 11)])
def test_square_and_ellipse_centred_on_position(shape, pos_x, pos_y):
    image = render_one(shape, scale=3, pos_x=pos_x, pos_y=pos_y)
    column, row = centroid(image)
    assert abs(column - (16 + 32 * pos_x / 31)) < 0.5
    assert abs(row - (16 + 32 * pos_y / 31)) < 0.5


def test_pos_y_zero_is_at_the_top():
    rows, _ = np.nonzero(render_one(0, pos_y=0))
    assert rows.max() < 32


def test_areas_at_full_scale():
    assert abs(render_one(0).sum() - (2 * 9.6) ** 2) < 0.1 * (2 * 9.6) ** 2
    ellipse = render_one(1)
    assert abs(ellipse.sum() - math.pi * 12.75 * 7.22) < 0.1 * math.pi * 12.75 * 7.22
    width, height = extent(ellipse)
    assert width > height


def test_scale_shrinks_sprites():
    areas = [render_one(0, scale=scale).sum() for scale in range(6)]
    assert areas == sorted(areas) and areas[0] < 0.35 * areas[-1]


def test_heart_size_and_lobes_up():
    heart = render_one(2)
    width, height = extent(heart)
    assert 18 <= width <= 21 and 16 <= height <= 19
    column, row = centroid(heart)
    pivot = 16 + 32 * 15 / 31
    assert abs(column - pivot) < 0.5
    assert 1.0 <= pivot - row <= 3.0
    # Lobes up: the top rows have a notch between the lobes, the bottom narrows to a tip.
    rows = np.nonzero(heart.any(axis=1))[0]
    assert heart[rows[-1]].sum() <= 2
    top_runs = np.count_nonzero(np.diff(np.concatenate([[0], heart[rows[0]], [0]]).astype(int)) == 1)
    assert top_runs == 2


@pytest.mark.parametrize("shape", [0, 1, 2])
def test_orientation_wraps_around(shape):
    np.testing.assert_array_equal(render_one(shape, orientation=0), render_one(shape, orientation=39))
    assert not np.array_equal(render_one(shape, orientation=0), render_one(shape, orientation=3))


def test_quarter_turn_makes_ellipse_tall():
    width, height = extent(render_one(1, orientation=10))
    assert height > width


def test_rotation_is_counter_clockwise_as_displayed():
    pivot = 16 + 32 * 15 / 31
    ellipse = render_one(1, orientation=3)
    rows, columns = np.nonzero(ellipse)
    right = columns + 0.5 > pivot
    assert (rows[right] + 0.5).mean() < pivot - 1  # the right end rose
    assert (rows[~right] + 0.5).mean() > pivot + 1
    # The heart's lobes tip to the left (up-left) as it turns counter-clockwise.
    column, _ = centroid(render_one(2, orientation=3))
    assert column < pivot - 0.3


def test_numpy_and_torch_renderers_agree():
    classes = data.all_latent_classes()[np.random.default_rng(1).integers(0, 737280, 2000)]
    expected = data.render_dsprites(classes)
    actual = dsprites.render_dsprites_torch(torch.from_numpy(classes))
    assert actual.dtype == torch.uint8 and actual.shape == (2000, 64, 64)
    np.testing.assert_array_equal(actual.numpy(), expected)


def test_rendered_dataset_batch():
    dataset = data.DSprites(None)
    assert dataset.source == "rendered" and len(dataset) == 737280
    assert dataset.factor_sizes == (3, 6, 40, 32, 32) and dataset.channels == 1
    indices = torch.tensor([0, 1, 500_000, 737279, 245760, 123456])
    images, factors = dataset.batch(indices)
    assert images.shape == (6, 1, 64, 64) and images.dtype == torch.float32
    assert factors.shape == (6, 5) and factors.dtype == torch.int64
    classes = data.all_latent_classes()[indices.numpy()]
    np.testing.assert_array_equal(factors.numpy(), classes[:, 1:])
    np.testing.assert_array_equal(images[:, 0].numpy(), data.render_dsprites(classes).astype(np.float32))
    assert torch.equal(dataset.latents_classes, torch.from_numpy(data.all_latent_classes()))


def test_missing_npz_falls_back_to_renderer(tmp_path):
    assert data.DSprites(str(tmp_path)).source == "rendered"


def test_npz_with_wrong_shapes_is_rejected(tmp_path):
    np.savez(tmp_path / data.NPZ_NAME, imgs=np.zeros((3, 64, 64), np.uint8), latents_classes=np.zeros((3, 6)))
    with pytest.raises(data.DataError, match="not a valid dSprites npz"):
        data.DSprites(str(tmp_path))


def test_npz_missing_array_is_rejected(tmp_path):
    np.savez(tmp_path / data.NPZ_NAME, imgs=np.zeros((3, 64, 64), np.uint8))
    with pytest.raises(data.DataError, match="latents_classes"):
        data.DSprites(str(tmp_path))


@pytest.mark.parametrize("truncate", [True, False])
def test_corrupt_npz_is_rejected(tmp_path, truncate):
    path = tmp_path / data.NPZ_NAME
    if truncate:
        np.savez(path, imgs=np.zeros((100, 64, 64), np.uint8))
        path.write_bytes(path.read_bytes()[:1000])
    else:
        path.write_bytes(b"not an npz at all" * 100)
    with pytest.raises(data.DataError, match="delete it"):
        data.DSprites(str(tmp_path))


def strided_fake_npz(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A full-size npz stand-in in under 1 MB: image i is buffer[i : i + 4096] as 64x64."""
    buffer = rng.integers(0, 2, 737280 + 64 * 64, dtype=np.uint8)
    images = np.lib.stride_tricks.as_strided(buffer, shape=(737280, 64, 64), strides=(1, 64, 1))
    return {"imgs": images, "latents_classes": data.all_latent_classes()}, buffer


def test_npz_images_are_looked_up_by_index(tmp_path, monkeypatch):
    arrays, buffer = strided_fake_npz(np.random.default_rng(2))
    np.savez(tmp_path / data.NPZ_NAME, placeholder=np.zeros(1))
    monkeypatch.setattr(dsprites, "_read_npz", lambda path: arrays)
    dataset = data.DSprites(str(tmp_path))
    assert dataset.source == "npz"
    indices = torch.tensor([0, 7, 4096, 737279, 300_001])
    images, factors = dataset.batch(indices)
    assert images.shape == (5, 1, 64, 64) and images.dtype == torch.float32
    for row, index in enumerate(indices.tolist()):
        expected = buffer[index : index + 64 * 64].reshape(64, 64)
        np.testing.assert_array_equal(images[row, 0].numpy(), expected.astype(np.float32))
    np.testing.assert_array_equal(factors.numpy(), data.all_latent_classes()[indices.numpy()][:, 1:])


def test_npz_in_nonstandard_order_is_rejected(tmp_path, monkeypatch):
    arrays, _ = strided_fake_npz(np.random.default_rng(3))
    arrays["latents_classes"] = arrays["latents_classes"][::-1]
    np.savez(tmp_path / data.NPZ_NAME, placeholder=np.zeros(1))
    monkeypatch.setattr(dsprites, "_read_npz", lambda path: arrays)
    with pytest.raises(data.DataError, match="order"):
        data.DSprites(str(tmp_path))


def test_command_line_errors_are_one_line(capsys, tmp_path):
    assert data.main(["render", "--out", str(tmp_path / "missing" / "grid.png")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and error.endswith(".")
