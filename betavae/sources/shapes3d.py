"""Shapes3D (Burgess & Kim 2018, DeepMind's 3dshapes): 480,000 RGB images of a shape in a room, six factors, read from
DeepMind's `3dshapes.h5` as distributed (h5py) and memory-mapped from a one-time uint8 copy in data_dir, so the 5.9 GB
of images are never loaded whole."""
from __future__ import annotations

import os

import numpy as np
import torch
from tqdm import tqdm

from betavae.errors import DataError
from betavae.sources.grid import FactorGrid
from betavae.sources.interface import REGISTRY

FILE, CACHE = "3dshapes.h5", "3dshapes_images.npy"
SOURCE = "https://storage.googleapis.com/3d-shapes/3dshapes.h5, DeepMind, Apache 2.0"
# The factors in the order of the file's `labels` columns (the registry's); the images are in mixed-radix order.
FACTORS = REGISTRY["shapes3d"].factors
CHUNK = 10_000  # images copied per step of the one-time conversion


def _classes(labels: np.ndarray, path: str) -> np.ndarray:
    """Each label column's values as class indices in sorted order; DataError when a column has the wrong count."""
    classes = np.empty(labels.shape, dtype=np.int64)
    for k, (name, size) in enumerate(FACTORS):
        values, classes[:, k] = np.unique(labels[:, k], return_inverse=True)
        if len(values) != size:
            raise DataError(f"{path}'s labels column {k} ({name}) has {len(values)} values where Shapes3D has "
                            f"{size}; download {FILE} again ({SOURCE}).")
    return classes


def _grid_order(sizes) -> np.ndarray:
    """Every class combination in mixed-radix order, the last factor fastest: [prod(sizes), K]."""
    return np.stack([g.ravel() for g in np.indices(sizes)], axis=1)


def read_shapes3d(data_dir: str, say=print) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 64, 64, 3], memory-mapped; factor classes int64 [N, 6]) from data_dir/3dshapes.h5, copied once
    to data_dir/3dshapes_images.npy; one DataError sentence for a missing, corrupt or mis-shaped file."""
    import h5py

    path, sizes = os.path.join(data_dir, FILE), tuple(size for _, size in FACTORS)
    count = int(np.prod(sizes))
    if not os.path.isfile(path):
        raise DataError(f"No {FILE} in {data_dir}; put DeepMind's file there ({SOURCE}) or give --set data_dir= the "
                        f"folder that holds it.")
    try:
        with h5py.File(path, "r") as file:
            missing = [key for key in ("images", "labels") if key not in file]
            if missing:
                raise DataError(f"{path} has no {' or '.join(missing)} dataset; it is not DeepMind's {FILE}.")
            images, labels = file["images"], file["labels"]
            if images.shape != (count, 64, 64, 3) or images.dtype != np.uint8 or labels.shape != (count, len(sizes)):
                raise DataError(f"{path} holds images {images.dtype} {list(images.shape)} and labels "
                                f"{list(labels.shape)}; Shapes3D has uint8 [{count}, 64, 64, 3] and [{count}, "
                                f"{len(sizes)}].")
            classes = _classes(labels[()], path)
            if not np.array_equal(classes, _grid_order(sizes)):
                raise DataError(f"{path}'s images are not in DeepMind's factor order; download {FILE} again.")
            cache = os.path.join(data_dir, CACHE)
            if not _cache_fits(cache, count):
                _convert(images, cache, say)
    except OSError as error:
        raise DataError(f"{path} cannot be read as HDF5 ({error}); it is truncated or corrupt: download it again "
                        f"({SOURCE}).") from None
    return np.load(cache, mmap_mode="r"), classes


def _cache_fits(cache: str, count: int) -> bool:
    try:
        array = np.load(cache, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return array.shape == (count, 64, 64, 3) and array.dtype == np.uint8


def _convert(images, cache: str, say) -> None:
    """Copy the h5 images to an .npy in chunks (a progress bar, the size said first), atomically."""
    size = images.shape[0] * 64 * 64 * 3
    say(f"converting {FILE} once to {cache} ({size / 1e9:.1f} GB, memory-mapped afterwards)")
    partial = cache + ".part"
    out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=images.shape)
    for start in tqdm(range(0, images.shape[0], CHUNK), desc="converting 3dshapes", leave=False):
        out[start:start + CHUNK] = images[start:start + CHUNK]
    out.flush()
    del out
    os.replace(partial, cache)


class Shapes3D:
    """Shapes3D by index and by factor classes; images memory-mapped, converted to float per batch."""

    channels = 3

    def __init__(self, data_dir: str, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.factor_names = [name for name, _ in FACTORS]
        self.factor_sizes = tuple(size for _, size in FACTORS)
        self._images, classes = read_shapes3d(data_dir)
        self._latents_classes = torch.cat([torch.zeros(len(classes), 1, dtype=torch.int64),
                                           torch.from_numpy(classes)], 1).to(self.device)
        self._grid = FactorGrid(classes, self.factor_sizes, self.device)

    def __len__(self) -> int:
        return len(self._latents_classes)

    @property
    def latents_classes(self) -> torch.Tensor:
        """int64 [N, 1 + 6] in file order (column 0 a constant 0, as dSprites' colour), on self.device."""
        return self._latents_classes

    def _pixels(self, rows: torch.Tensor) -> torch.Tensor:
        pixels = torch.from_numpy(np.ascontiguousarray(self._images[rows.cpu().numpy()]))  # [B, 64, 64, 3] uint8
        return pixels.permute(0, 3, 1, 2).to(self.device, torch.float32).div_(255.0)

    def images(self, latents_classes: torch.Tensor) -> torch.Tensor:
        """[B, 1 + 6] int64 -> float32 [B, 3, 64, 64] in [0, 1]."""
        return self._pixels(self._grid.rows(latents_classes.to(self.device, torch.int64)[:, 1:]))

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """indices [B] -> (images float32 [B, 3, 64, 64], factors int64 [B, 6]) on self.device."""
        return self._pixels(indices), self._latents_classes[indices.to(self.device), 1:].contiguous()

    def end_of_run_pictures(self, model, run_dir: str, params) -> list[str]:
        """None beyond the factor pictures and scores every dataset with factors gets."""
        return []


def make_shapes3d(params, device: torch.device | str = "cpu") -> Shapes3D:
    return Shapes3D(params.data_dir, device)
