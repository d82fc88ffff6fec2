"""A complete factor grid of uint8 RGB images memory-mapped from disk (Shapes3D, MPI3D): images by index and by factor
classes, converted to float per batch, never loaded whole."""
from __future__ import annotations

import os

import numpy as np
import torch
from tqdm import tqdm

from betavae.sources.grid import FactorGrid, FactorImages


def grid_order(sizes) -> np.ndarray:
    """Every class combination in mixed-radix order, the last factor fastest: int64 [prod(sizes), K]."""
    return np.stack([g.ravel() for g in np.indices(sizes)], axis=1).astype(np.int64)


def fits(path: str, shape: tuple) -> bool:
    """Whether `path` is an .npy of uint8 with this shape (a finished one-time copy)."""
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return array.shape == shape and array.dtype == np.uint8


def copy_stream(source, target: str, size: int, what: str, say) -> None:
    """Copy a readable binary stream of `size` bytes to `target` atomically, the size said first, with a bar."""
    say(f"copying {what} once to {target} ({size / 1e9:.1f} GB, memory-mapped afterwards)")
    partial = target + ".part"
    with open(partial, "wb") as out, tqdm(total=size, unit="B", unit_scale=True, desc=what, leave=False) as bar:
        while chunk := source.read(1 << 24):
            out.write(chunk)
            bar.update(len(chunk))
    os.replace(partial, target)


class MemmapGrid(FactorImages):
    """Images uint8 [N, 64, 64, 3] (an np.memmap) in mixed-radix order over factors `names` of `sizes`."""

    channels = 3

    def __init__(self, images: np.ndarray, names, sizes, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.factor_names, self.factor_sizes = list(names), tuple(sizes)
        classes = grid_order(self.factor_sizes)
        self._images = images
        self._latents_classes = torch.cat([torch.zeros(len(classes), 1, dtype=torch.int64),
                                           torch.from_numpy(classes)], 1).to(self.device)
        self._grid = FactorGrid(classes, self.factor_sizes, self.device)

    def _pixels(self, rows: torch.Tensor) -> torch.Tensor:
        pixels = torch.from_numpy(np.ascontiguousarray(self._images[rows.cpu().numpy()]))  # [B, 64, 64, 3] uint8
        return pixels.permute(0, 3, 1, 2).to(self.device, torch.float32).div_(255.0)
