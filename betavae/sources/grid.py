"""Which image holds each combination of factor classes: the one mapping the built-in dSprites and a user's npz share."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch


class FactorGrid:
    """Factor classes [N, K] of N images over sizes (s_1, ..., s_K). The grid is complete when every combination of
    classes occurs exactly once; then `rows` maps any combination to its image's row, in whatever order the rows
    come (row-major order, as dSprites', needs no lookup table)."""

    def __init__(self, classes: np.ndarray, sizes: Sequence[int], device: torch.device | str = "cpu"):
        classes = np.asarray(classes, dtype=np.int64)
        self.sizes = tuple(int(s) for s in sizes)
        self.cells = math.prod(self.sizes)
        strides = np.array([math.prod(self.sizes[k + 1:]) for k in range(len(self.sizes))], dtype=np.int64)
        self.strides = torch.from_numpy(strides).to(device)
        cell = classes @ strides  # [N]
        self.complete = len(classes) == self.cells and bool((np.bincount(cell, minlength=self.cells) == 1).all())
        self._cell_to_row: torch.Tensor | None = None
        if self.complete and not np.array_equal(cell, np.arange(len(cell))):
            lookup = np.empty(self.cells, dtype=np.int64)
            lookup[cell] = np.arange(len(cell))
            self._cell_to_row = torch.from_numpy(lookup).to(device)

    def rows(self, classes: torch.Tensor) -> torch.Tensor:
        """[B, K] factor classes -> [B] rows of their images; only for a complete grid."""
        if not self.complete:
            raise ValueError("an incomplete factor grid has no image for some combinations")
        cell = (classes.to(self.strides.device, torch.int64) * self.strides).sum(dim=1)  # [B]
        return cell if self._cell_to_row is None else self._cell_to_row[cell]


class FactorImages:
    """What datasets of stored images with factor classes share (a user's npz, Shapes3D, MPI3D): length, classes,
    images by index and by factor classes, no pictures of their own. A subclass sets `device`, `_latents_classes`
    (int64 [N, 1 + K], column 0 a constant 0) and `_grid` (a FactorGrid), and defines `_pixels(rows)`."""

    def __len__(self) -> int:
        return len(self._latents_classes)

    @property
    def latents_classes(self) -> torch.Tensor:
        """int64 [N, 1 + K] in file order (column 0 a constant 0, as dSprites' colour), on self.device."""
        return self._latents_classes

    def images(self, latents_classes: torch.Tensor) -> torch.Tensor:
        """[B, 1 + K] int64 -> float32 [B, C, 64, 64] in [0, 1]; only for a complete grid."""
        return self._pixels(self._grid.rows(latents_classes.to(self.device, torch.int64)[:, 1:]))

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """indices [B] -> (images float32 [B, C, 64, 64], factors int64 [B, K]) on self.device."""
        return self._pixels(indices), self._latents_classes[indices.to(self.device), 1:].contiguous()

    def end_of_run_pictures(self, model, run_dir: str, params) -> list[str]:
        """None beyond the factor pictures and scores every dataset with factors gets."""
        return []
