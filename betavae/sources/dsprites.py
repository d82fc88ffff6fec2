"""dSprites' ground-truth factors, an exact procedural renderer of its sprites, and DeepMind's npz (read, checked,
downloaded on request)."""
from __future__ import annotations

import functools
import math
import os
import zipfile
import zlib

import numpy as np
import torch

from betavae.errors import DataError
from betavae.sources.common import IMAGE_SIZE

# ---------------------------------------------------------------- dSprites

LATENT_NAMES = ("color", "shape", "scale", "orientation", "posX", "posY")
LATENT_SIZES = (1, 3, 6, 40, 32, 32)
NPZ_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"

DATASET_SIZE = math.prod(LATENT_SIZES)  # 737280
# Row-major strides of the npz: posY varies fastest.
LATENT_STRIDES = np.array([math.prod(LATENT_SIZES[i + 1 :]) for i in range(6)], dtype=np.int64)


def latent_possible_values() -> dict[str, np.ndarray]:
    """The npz's metadata['latents_possible_values'], rebuilt without reading the file."""
    return {
        "color": np.array([1.0]),
        "shape": np.array([1.0, 2.0, 3.0]),
        "scale": np.linspace(0.5, 1.0, 6),
        "orientation": np.linspace(0.0, 2.0 * np.pi, 40),
        "posX": np.linspace(0.0, 1.0, 32),
        "posY": np.linspace(0.0, 1.0, 32),
    }


def all_latent_classes() -> np.ndarray:
    """Every latent class combination in npz order: int64 [737280, 6]."""
    return np.indices(LATENT_SIZES, dtype=np.int64).reshape(6, -1).T.copy()


def classes_to_index(classes: np.ndarray) -> np.ndarray:
    """Row of the npz holding each class combination: [N, 6] -> [N] int64."""
    return np.asarray(classes, dtype=np.int64) @ LATENT_STRIDES


def classes_to_values(classes: np.ndarray) -> np.ndarray:
    """Latent values (as in the npz's latents_values) of class combinations: [N, 6] -> [N, 6] float64."""
    classes = np.asarray(classes, dtype=np.int64)
    possible = latent_possible_values()
    return np.stack([possible[name][classes[:, i]] for i, name in enumerate(LATENT_NAMES)], axis=1)


# Renderer geometry, measured from real dSprites frames, in pixels at scale 1. Pixel i covers
# [i, i + 1] and is on when its centre lies inside the sprite; sprite frame coordinates (u, v)
# have v pointing up the displayed image so that growing orientation turns sprites
# counter-clockwise as displayed.
_SQUARE_HALF_SIDE = 9.6
_ELLIPSE_SEMI_AXES = (12.75, 7.22)
_HEART_LOBE_RADIUS = 5.45
_HEART_LOBE_CENTRE = (4.2, 3.9)  # mirrored to -4.2 for the left lobe
_HEART_TIP_DROP = 8.75


def _heart_half_planes(side: float) -> list[tuple[float, float, float]]:
    """Half-planes alpha·u + beta·v + gamma <= 0 whose intersection is the triangle between the
    tip and the tangent points on one lobe; with the lobe's disc it forms their convex hull."""
    lobe_u, lobe_v = side * _HEART_LOBE_CENTRE[0], _HEART_LOBE_CENTRE[1]
    axis_u, axis_v = lobe_u, lobe_v + _HEART_TIP_DROP  # from the tip to the lobe centre
    length = math.hypot(axis_u, axis_v)
    axis_u, axis_v = axis_u / length, axis_v / length
    half_angle = math.asin(_HEART_LOBE_RADIUS / length)
    planes = []
    for turn in (half_angle, -half_angle):
        tangent_u = axis_u * math.cos(turn) - axis_v * math.sin(turn)
        tangent_v = axis_u * math.sin(turn) + axis_v * math.cos(turn)
        # Outward normal: the tangent turned a further quarter away from the axis.
        normal_u, normal_v = (-tangent_v, tangent_u) if turn > 0 else (tangent_v, -tangent_u)
        planes.append((normal_u, normal_v, normal_v * _HEART_TIP_DROP))
    chord_distance = (length**2 - _HEART_LOBE_RADIUS**2) / length
    planes.append((axis_u, axis_v, axis_v * _HEART_TIP_DROP - chord_distance))
    return planes


_HEART_SIDES = [(side, _heart_half_planes(side)) for side in (1.0, -1.0)]


def _render_tables() -> dict[str, np.ndarray]:
    """float32 lookup tables from class to geometry, shared by the numpy and torch renderers so
    that both perform identical float32 arithmetic."""
    angles = np.linspace(0.0, 2.0 * np.pi, 40)
    cos, sin = np.cos(angles), np.sin(angles)
    # Snap 1e-16 residues to zero so orientation 2π draws exactly what 0 draws.
    cos[np.abs(cos) < 1e-9], sin[np.abs(sin) < 1e-9] = 0.0, 0.0
    return {
        "pixel_centres": np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5,
        "centres": (16.0 + 32.0 * np.linspace(0.0, 1.0, 32)).astype(np.float32),
        "inverse_scale": (1.0 / np.linspace(0.5, 1.0, 6)).astype(np.float32),
        "cos": cos.astype(np.float32),
        "sin": sin.astype(np.float32),
    }


_TABLES = _render_tables()


@functools.lru_cache(maxsize=8)
def _torch_tables(device: torch.device) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(table).to(device) for name, table in _TABLES.items()}


def _frame(tables, classes):
    """Per-image pixel offsets from the sprite centre and rotation/scale terms, as numpy arrays
    or torch tensors alike: [k, 6] classes -> two [k, 64] offsets and three [k] factors."""
    pixels = tables["pixel_centres"]
    return (
        pixels[None, :] - tables["centres"][classes[:, 4]][:, None],  # rightwards, per column
        tables["centres"][classes[:, 5]][:, None] - pixels[None, :],  # upwards, per row
        tables["cos"][classes[:, 3]],
        tables["sin"][classes[:, 3]],
        tables["inverse_scale"][classes[:, 2]],
    )


def _linear_terms(frame, alpha: float, beta: float, gamma: float):
    """Split alpha·u + beta·v + gamma over each image into a column term [N,1,64] and a row term
    [N,64,1], so a half-plane test costs one broadcast comparison at full size."""
    x_offset, y_offset, cos, sin, inverse_scale = frame
    column_coefficient = (alpha * cos - beta * sin) * inverse_scale  # [N]
    row_coefficient = (alpha * sin + beta * cos) * inverse_scale
    column_term = column_coefficient[:, None] * x_offset + gamma  # [N, 64]
    row_term = row_coefficient[:, None] * y_offset
    return column_term[:, None, :], row_term[:, :, None]


def _inside_half_plane(frame, alpha: float, beta: float, gamma: float):
    column_term, row_term = _linear_terms(frame, alpha, beta, gamma)
    return column_term <= -row_term  # [N, 64, 64] bool


def _squared(frame, alpha: float, beta: float, gamma: float):
    column_term, row_term = _linear_terms(frame, alpha, beta, gamma)
    value = column_term + row_term  # [N, 64, 64]
    return value * value


def _draw_square(frame):
    inside = None
    for alpha, beta in ((1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0)):
        plane = _inside_half_plane(frame, alpha, beta, -_SQUARE_HALF_SIDE)
        inside = plane if inside is None else inside & plane
    return inside


def _draw_ellipse(frame):
    semi_u, semi_v = _ELLIPSE_SEMI_AXES
    return _squared(frame, 1.0 / semi_u, 0.0, 0.0) + _squared(frame, 0.0, 1.0 / semi_v, 0.0) <= 1.0


def _draw_heart(frame):
    inside = None
    for side, planes in _HEART_SIDES:
        lobe_u, lobe_v = side * _HEART_LOBE_CENTRE[0], _HEART_LOBE_CENTRE[1]
        disc = _squared(frame, 1.0, 0.0, -lobe_u) + _squared(frame, 0.0, 1.0, -lobe_v) <= _HEART_LOBE_RADIUS**2
        triangle = _inside_half_plane(frame, *planes[0])
        for plane in planes[1:]:
            triangle = triangle & _inside_half_plane(frame, *plane)
        hull = disc | triangle
        inside = hull if inside is None else inside | hull
    return inside


_SHAPE_DRAWERS = (_draw_square, _draw_ellipse, _draw_heart)  # indexed by shape class


def render_dsprites(latents_classes: np.ndarray) -> np.ndarray:
    """Draw dSprites images for class combinations: [N, 6] int -> [N, 64, 64] uint8 in {0, 1}."""
    classes = np.asarray(latents_classes, dtype=np.int64)
    images = np.zeros((len(classes), IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    for shape_class, draw in enumerate(_SHAPE_DRAWERS):
        rows = np.flatnonzero(classes[:, 1] == shape_class)
        if rows.size == 0:
            continue
        images[rows] = draw(_frame(_TABLES, classes[rows]))
    return images.view(np.uint8)


def render_mask_torch(classes: torch.Tensor) -> torch.Tensor:
    tables = _torch_tables(classes.device)
    images = torch.zeros((len(classes), IMAGE_SIZE, IMAGE_SIZE), dtype=torch.bool, device=classes.device)
    for shape_class, draw in enumerate(_SHAPE_DRAWERS):
        rows = torch.nonzero(classes[:, 1] == shape_class).squeeze(1)
        if rows.numel() == 0:
            continue
        images[rows] = draw(_frame(tables, classes[rows]))
    return images  # [N, 64, 64] bool


def render_dsprites_torch(latents_classes: torch.Tensor) -> torch.Tensor:
    """Draw dSprites images on the tensor's device: [N, 6] int -> [N, 64, 64] uint8 in {0, 1}."""
    return render_mask_torch(latents_classes.long()).view(torch.uint8)


def _read_npz(path: str) -> dict[str, np.ndarray]:
    """The two arrays DSprites needs; metadata is never unpickled, so allow_pickle stays off."""
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in ("imgs", "latents_classes") if name in archive.files}


def load_npz_images(path: str) -> torch.Tensor:
    """Validated npz images as uint8 [737280, 64, 64]; DataError naming the problem otherwise."""

    def invalid(reason: str) -> DataError:
        return DataError(
            f"{path} is not a valid dSprites npz ({reason}); delete it to use the built-in renderer "
            f"or re-download with `python data.py download --data-dir {os.path.dirname(path) or '.'}`."
        )

    # np.load would try a non-zip file as a pickle, so reject those before it gets the chance.
    if not zipfile.is_zipfile(path):
        raise invalid("not a zip archive")
    try:
        arrays = _read_npz(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise invalid(f"{type(error).__name__}: {error}") from error
    missing = [name for name in ("imgs", "latents_classes") if name not in arrays]
    if missing:
        raise invalid(f"no {' or '.join(missing)} array")
    images, classes = arrays["imgs"], arrays["latents_classes"]
    if images.shape != (DATASET_SIZE, IMAGE_SIZE, IMAGE_SIZE) or images.dtype != np.uint8:
        raise invalid(f"imgs is {images.dtype} {list(images.shape)}")
    if classes.shape != (DATASET_SIZE, 6):
        raise invalid(f"latents_classes has shape {list(classes.shape)}")
    # Images are looked up by classes_to_index, which is only right for the standard row order.
    if not np.array_equal(classes, all_latent_classes()):
        raise invalid("latents_classes is not in the standard order")
    return torch.from_numpy(images)
