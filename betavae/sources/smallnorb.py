"""SmallNORB (LeCun et al. 2004) as disentanglement_lib reads it: the six NYU files in their binary-matrix format
(gzipped or not), the left camera's image (camera 0), training and test sets concatenated (48,600 images), resized
from 96 × 96 to 64 × 64 (bilinear, antialiased; disentanglement_lib resizes with PIL's antialiasing filter). Factors:
category 5, elevation 9, azimuth 18 (the file's 0, 2, …, 34 halved), lighting 6; the instance (10 per category) is a
nuisance, so every combination of factor classes has ten images and the metrics draw among the images sharing a
value (docs/data.md, "What the metrics need")."""
from __future__ import annotations

import numpy as np
import torch

from betavae.errors import DataError
from betavae.sources.common import first_file, read_bytes
from betavae.sources.grid import FactorGrid, FactorImages

SPLITS = (("training", "5x46789"), ("testing", "5x01235"))  # disentanglement_lib's order: training first
FACTORS = (("category", 5), ("elevation", 9), ("azimuth", 18), ("lighting", 6))
MAGIC = {0x1E3D4C55: np.uint8, 0x1E3D4C54: np.int32}  # the format's codes for byte and integer matrices
SOURCE = "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/"


def file_name(split: str, kind: str) -> str:
    ids = dict(SPLITS)[split]
    return f"smallnorb-{ids}x9x18x6x2x96x96-{split}-{kind}.mat"


def find(data_dir: str, split: str, kind: str) -> str:
    found = first_file((data_dir,), file_name(split, kind))
    if found:
        return found
    raise DataError(f"No {file_name(split, kind)}[.gz] in {data_dir}; run `python data.py download smallnorb "
                    f"--data-dir {data_dir}` ({SOURCE}) or give --set data_dir= the folder that holds the six files.")


def read_matrix(path: str) -> np.ndarray:
    """A matrix in NYU's binary format: int32 magic, int32 rank, max(3, rank) int32 sizes (little-endian), data."""
    raw = read_bytes(path, SOURCE)
    head = np.frombuffer(raw[:8], dtype="<i4") if len(raw) >= 8 else np.zeros(0, dtype=np.int64)
    if len(head) < 2 or int(head[0]) & 0xFFFFFFFF not in MAGIC or not 1 <= int(head[1]) <= 6:
        raise DataError(f"{path} is not a SmallNORB matrix (no byte or int32 magic number); download it again.")
    dtype, rank = MAGIC[int(head[0]) & 0xFFFFFFFF], int(head[1])
    offset = 8 + 4 * max(3, rank)
    shape = tuple(int(v) for v in np.frombuffer(raw[8:offset], dtype="<i4")[:rank])
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if len(raw) - offset != expected:
        raise DataError(f"{path} holds {len(raw) - offset:,} bytes of data where its header says {list(shape)}; it "
                        f"is truncated: download it again.")
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"), offset=offset).reshape(shape)


def read_smallnorb(data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 96, 96] of camera 0, factor classes int64 [N, 4]), training then test."""
    images, classes = [], []
    for split, _ in SPLITS:
        pixels, category, info = (read_matrix(find(data_dir, split, kind)) for kind in ("dat", "cat", "info"))
        if pixels.ndim != 4 or pixels.shape[1:] != (2, 96, 96) or category.shape != (len(pixels),) \
                or info.shape != (len(pixels), 4):
            raise DataError(f"SmallNORB's {split} files in {data_dir} hold {list(pixels.shape)}, {list(category.shape)}"
                            f" and {list(info.shape)}; expected [N, 2, 96, 96], [N] and [N, 4].")
        images.append(pixels[:, 0])
        classes.append(np.stack([category, info[:, 1], info[:, 2] // 2, info[:, 3]], axis=1).astype(np.int64))
    classes = np.concatenate(classes)
    sizes = np.array([size for _, size in FACTORS])
    if (classes < 0).any() or (classes >= sizes).any():
        raise DataError(f"SmallNORB's info files in {data_dir} hold factor values outside {list(sizes)}; download "
                        f"them again.")
    return np.concatenate(images), classes


class SmallNORB(FactorImages):
    """SmallNORB's 48,600 images at 64 × 64 in memory (199 MB as uint8), with four factors and instance a nuisance."""

    channels = 1
    factor_names = [name for name, _ in FACTORS]
    factor_sizes = tuple(size for _, size in FACTORS)

    def __init__(self, data_dir: str, device: torch.device | str = "cpu"):
        from betavae.sources.idx import resized

        self.device = torch.device(device)
        images, classes = read_smallnorb(data_dir)
        self._images = resized(images).to(self.device)  # [N, 1, 64, 64]
        self._latents_classes = torch.from_numpy(
            np.concatenate([np.zeros((len(classes), 1), dtype=np.int64), classes], axis=1)).to(self.device)
        self._grid = FactorGrid(classes, self.factor_sizes, self.device)
        self.complete_grid = self._grid.complete  # False: ten instances share each combination

    def _pixels(self, rows: torch.Tensor) -> torch.Tensor:
        return self._images[rows.to(self.device)].to(torch.float32).div_(255.0)


def make_smallnorb(params, device: torch.device | str = "cpu") -> SmallNORB:
    return SmallNORB(params.data_dir, device)
