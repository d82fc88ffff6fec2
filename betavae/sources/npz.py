"""A user's npz in the shape of DeepMind's dSprites file: images and factor classes, checked, resized to 64×64, in memory."""
from __future__ import annotations

import dataclasses
import os
import sys
import zipfile
import zlib
from typing import Callable

import numpy as np
import torch

from betavae.errors import DataError
from betavae.sources.common import IMAGE_SIZE
from betavae.sources.dsprites import LATENT_NAMES, LATENT_SIZES
from betavae.sources.grid import FactorGrid, FactorImages

REQUIRED = ("imgs", "latents_classes")
OPTIONAL = ("latents_names", "latents_values")
CHUNK = 4096  # images converted at a time, so a check or a resize never holds a float copy of the whole file


@dataclasses.dataclass
class FactorArrays:
    """What a run needs from the file: images and the factors that vary, each factor's classes counted from 0."""

    images: np.ndarray              # uint8 [N, C, 64, 64]; pixel value = images · scale
    scale: float                    # 1 for binary 0/1 images (dSprites'), 1/255 otherwise
    classes: np.ndarray             # int64 [N, K], factor k's classes 0 .. sizes[k] − 1 in the order of their values
    names: tuple[str, ...]          # K factor names
    sizes: tuple[int, ...]          # K numbers of distinct classes
    values: list[np.ndarray]        # K arrays: the value of each class (latents_values, else the file's class index)


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes; None where there is no such file."""
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def member_header(archive: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an array in an npz from its header alone, before anything is loaded."""
    with archive.open(name + ".npy") as file:
        version = np.lib.format.read_magic(file)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = reader(file)
    return tuple(shape), dtype


def _open(path: str) -> tuple[zipfile.ZipFile, list[str]]:
    if not os.path.isfile(path):
        raise DataError(f"No file at {path}; give --set dataset= the path of an existing .npz file.")
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise DataError(f"{path} is not an npz archive ({error}); write it with numpy.savez.") from None
    keys = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
    for name in REQUIRED:
        if name not in keys:
            raise DataError(f"{path} has no '{name}' array (it has: {', '.join(keys) or 'none'}); save the images as "
                            f"imgs and the factor classes as latents_classes.")
    return archive, keys


def _check_shapes(path: str, image_shape: tuple, class_shape: tuple) -> None:
    if len(image_shape) not in (3, 4) or (len(image_shape) == 4 and image_shape[3] not in (1, 3)):
        raise DataError(f"{path}'s imgs is shaped {list(image_shape)}; give [N, H, W] or [N, H, W, C] with C = 1 or 3.")
    if len(class_shape) != 2 or class_shape[1] < 1:
        raise DataError(f"{path}'s latents_classes is shaped {list(class_shape)}; give one row of factor classes "
                        f"per image, [N, F].")
    if image_shape[0] != class_shape[0]:
        raise DataError(f"{path} has {image_shape[0]} images but {class_shape[0]} rows of latents_classes; "
                        f"give one row per image.")


def _load(archive: zipfile.ZipFile, path: str, name: str) -> np.ndarray:
    try:
        with archive.open(name + ".npy") as file:
            return np.lib.format.read_array(file, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(f"{path}'s {name} cannot be read ({type(error).__name__}: {error}); save it again with "
                        f"numpy.savez (plain arrays, strings for names).") from None


def _pixel_scale(path: str, images: np.ndarray) -> float:
    """1 for binary uint8 (dSprites'), 1/255 for other uint8; floats are checked for NaN and [0, 1]."""
    if images.dtype == np.uint8:
        return 1.0 if int(images.max(initial=0)) <= 1 else 1 / 255
    if not np.issubdtype(images.dtype, np.floating):
        raise DataError(f"{path}'s imgs is {images.dtype}; store uint8 or float pixels in [0, 1].")
    for start in range(0, len(images), CHUNK):
        part = images[start:start + CHUNK]
        if not np.isfinite(part).all():
            raise DataError(f"{path}'s imgs holds NaN or infinite pixels (first near image {start}); "
                            f"replace them with values in [0, 1].")
        if part.size and (part.min() < 0 or part.max() > 1):
            raise DataError(f"{path}'s imgs holds pixels outside [0, 1] ({part.min():.3g} to {part.max():.3g} "
                            f"near image {start}); scale them into [0, 1].")
    return 1 / 255


def _to_stored(images: np.ndarray, scale: float, say: Callable[[str], object]) -> tuple[np.ndarray, float]:
    """[N, H, W(, C)] -> uint8 [N, C, 64, 64], a view when the file already holds uint8 64×64 images."""
    images = images[..., None] if images.ndim == 3 else images
    if images.dtype == np.uint8 and images.shape[1:3] == (IMAGE_SIZE, IMAGE_SIZE):
        return images.transpose(0, 3, 1, 2), scale
    if images.shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE):
        say(f"resizing imgs from {images.shape[1]}×{images.shape[2]} to {IMAGE_SIZE}×{IMAGE_SIZE} (bilinear, antialiased)")
    out = np.empty((len(images), images.shape[3], IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for start in range(0, len(images), CHUNK):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + CHUNK])).permute(0, 3, 1, 2).float() * scale
        if x.shape[2:] != (IMAGE_SIZE, IMAGE_SIZE):
            x = torch.nn.functional.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=True,
                                                align_corners=False)
        out[start:start + CHUNK] = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return out, 1 / 255


def _check_classes(path: str, dtype: np.dtype) -> None:
    if not np.issubdtype(dtype, np.integer):
        raise DataError(f"{path}'s latents_classes is {dtype}; store integer class indices (astype(int)).")


def _factors(path: str, archive, keys, classes: np.ndarray, warn) -> tuple[np.ndarray, tuple, tuple, list]:
    """Classes counted from 0 per factor, names, sizes and class values; factors with a single value are dropped."""
    _check_classes(path, classes.dtype)
    count = classes.shape[1]
    uniques = [np.unique(classes[:, k], return_inverse=True) for k in range(count)]
    sizes = tuple(len(u[0]) for u in uniques)
    names = tuple(f"factor_{k}" for k in range(count))
    if "latents_names" in keys:
        given = _load(archive, path, "latents_names")
        if given.shape != (count,):
            raise DataError(f"{path}'s latents_names has shape {list(given.shape)} for {count} factors; give one "
                            f"name per column of latents_classes.")
        names = tuple(str(n) for n in given)
    elif sizes == LATENT_SIZES:
        names = LATENT_NAMES  # DeepMind's file keeps its names in a pickled metadata dict, which is never read
    values = [u[0].astype(np.float64) for u in uniques]
    if "latents_values" in keys:
        given = _load(archive, path, "latents_values")
        if given.shape != classes.shape or not np.issubdtype(given.dtype, np.number):
            raise DataError(f"{path}'s latents_values is {given.dtype} {list(given.shape)}; give numbers shaped "
                            f"like latents_classes, {list(classes.shape)}, or leave it out.")
        first = [np.unique(inverse, return_index=True)[1] for _, inverse in uniques]
        values = [given[rows, k].astype(np.float64) for k, rows in enumerate(first)]
    keep = [k for k in range(count) if sizes[k] > 1]
    for k in range(count):
        if sizes[k] == 1:
            warn(f"warning: factor '{names[k]}' of {path} has a single value; it is dropped from the factors")
    if not keep:
        raise DataError(f"No factor of {path} takes more than one value; give latents_classes a varying column.")
    classes = np.stack([uniques[k][1].reshape(-1) for k in keep], axis=1).astype(np.int64)
    return classes, tuple(names[k] for k in keep), tuple(sizes[k] for k in keep), [values[k] for k in keep]


def _size(count: int) -> str:
    return f"{count / 1e9:.2f} GB" if count >= 1e8 else f"{count / 1e6:.1f} MB"


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


def read_factor_npz(path: str, say: Callable[[str], object] = print, warn: Callable[[str], object] = _warn) -> FactorArrays:
    """Check the file, say the memory it needs, refuse when that exceeds MemAvailable, then read it once. Notices go to
    `say` (stdout), the warning about a factor with a single value to `warn` (stderr), errors raise DataError."""
    archive, keys = _open(path)
    with archive:
        try:
            image_shape, image_dtype = member_header(archive, "imgs")
            class_shape, class_dtype = member_header(archive, "latents_classes")
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            raise DataError(f"{path} is not a readable npz ({type(error).__name__}: {error}); save it again with "
                            f"numpy.savez.") from None
        _check_shapes(path, image_shape, class_shape)
        _check_classes(path, class_dtype)
        count, channels = image_shape[0], (image_shape[3] if len(image_shape) == 4 else 1)
        raw = int(np.prod(image_shape)) * image_dtype.itemsize
        stored = 0 if image_dtype == np.uint8 and image_shape[1:3] == (IMAGE_SIZE, IMAGE_SIZE) \
            else count * channels * IMAGE_SIZE * IMAGE_SIZE
        needed = raw + stored + 3 * int(np.prod(class_shape)) * 8  # classes as read, counted from 0, on the device
        available = available_memory()
        say(f"reading {path}: {count:,} images ({image_shape[1]}×{image_shape[2]}×{channels}) need {_size(needed)} of "
            f"memory" + (f" ({_size(available)} available)" if available else ""))
        if available is not None and needed > available:
            raise DataError(f"{path} needs {_size(needed)} of memory to load but only {_size(available)} is available "
                            f"(MemAvailable); free memory or use a smaller file.")
        classes = _load(archive, path, "latents_classes")
        classes, names, sizes, values = _factors(path, archive, keys, classes, warn)
        images = _load(archive, path, "imgs")
    images, scale = _to_stored(images, _pixel_scale(path, images), say)
    return FactorArrays(images, scale, classes, names, sizes, values)


class NpzFactors(FactorImages):
    """A user's npz in dSprites' layout (betavae/sources/npz.py): images held in memory, looked up by row or, when the
    factor grid is complete, by factor classes, through the FactorGrid that DSprites uses."""

    def __init__(self, path: str, device: torch.device | str = "cpu"):
        arrays = read_factor_npz(path)
        self.device, self.path = torch.device(device), path
        self.channels = arrays.images.shape[1]
        self.factor_names, self.factor_sizes, self.factor_values = arrays.names, arrays.sizes, arrays.values
        images = torch.from_numpy(arrays.images)  # uint8 [N, C, 64, 64]
        if self.device.type == "cuda":  # on the GPU when it fits, as DSprites' npz
            try:
                images = images.to(self.device)
            except torch.cuda.OutOfMemoryError:
                pass
        self._images, self._scale = images, arrays.scale
        classes = torch.from_numpy(arrays.classes)
        # A leading colour column of zeros, as DSprites' latents_classes, so the metrics and pictures read both alike.
        self._latents_classes = torch.cat([torch.zeros(len(classes), 1, dtype=torch.int64), classes], 1).to(self.device)
        self._grid = FactorGrid(arrays.classes, arrays.sizes, self.device)
        self.complete_grid = self._grid.complete

    def _pixels(self, rows: torch.Tensor) -> torch.Tensor:
        pixels = self._images[rows.to(self._images.device)]  # [B, C, 64, 64] uint8
        return pixels.to(self.device, torch.float32) * self._scale
