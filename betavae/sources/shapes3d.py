"""Shapes3D (Burgess & Kim 2018, DeepMind's 3dshapes): 480,000 RGB images of a shape in a room, six factors, read from
DeepMind's `3dshapes.h5` as distributed (h5py) and memory-mapped from a one-time uint8 copy in data_dir, so the 5.9 GB
of images are never loaded whole."""
from __future__ import annotations

import os

import numpy as np
import torch
from tqdm import tqdm

from betavae.errors import DataError
from betavae.sources.interface import REGISTRY
from betavae.sources.memmap import MemmapGrid, fits, grid_order

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


def read_shapes3d(data_dir: str, say=print) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 64, 64, 3], memory-mapped; factor classes int64 [N, 6]) from data_dir/3dshapes.h5, copied once
    to data_dir/3dshapes_images.npy; one DataError sentence for a missing, corrupt or mis-shaped file."""
    import h5py

    path, sizes = os.path.join(data_dir, FILE), tuple(size for _, size in FACTORS)
    count = int(np.prod(sizes))
    if not os.path.isfile(path):
        raise DataError(f"No {FILE} in {data_dir}; run `python data.py download shapes3d --data-dir {data_dir}` "
                        f"({SOURCE}) or give --set data_dir= the folder that holds it.")
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
            if not np.array_equal(classes, grid_order(sizes)):
                raise DataError(f"{path}'s images are not in DeepMind's factor order; download {FILE} again.")
            cache = os.path.join(data_dir, CACHE)
            if not fits(cache, (count, 64, 64, 3)):
                _convert(images, cache, say)
    except OSError as error:
        raise DataError(f"{path} cannot be read as HDF5 ({error}); it is truncated or corrupt: download it again "
                        f"({SOURCE}).") from None
    return np.load(cache, mmap_mode="r"), classes


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


class Shapes3D(MemmapGrid):
    """Shapes3D by index and by factor classes; images memory-mapped, converted to float per batch."""

    def __init__(self, data_dir: str, device: torch.device | str = "cpu"):
        images, _ = read_shapes3d(data_dir)
        super().__init__(images, [name for name, _ in FACTORS], [size for _, size in FACTORS], device)


def make_shapes3d(params, device: torch.device | str = "cpu") -> Shapes3D:
    return Shapes3D(params.data_dir, device)
