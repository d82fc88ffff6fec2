"""MNIST and Fashion-MNIST as torchvision keeps them (data_dir/MNIST/raw/ and data_dir/FashionMNIST/raw/, or the files
straight in data_dir): the 60,000 training images of the IDX file `train-images-idx3-ubyte`, gzipped or not, resized
once from 28 × 28 to 64 × 64 (bilinear, antialiased) and held as uint8. They have no ground-truth factors: runs
train, draw and report, and the metrics that need factors are skipped in one line."""
from __future__ import annotations

import os

import numpy as np
import torch

from betavae.errors import DataError
from betavae.sources.common import first_file, read_bytes

IMAGES = "train-images-idx3-ubyte"
FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
IDX_UBYTE_3D = 0x00000803  # the IDX magic number of a uint8 array of three dimensions


def find(name: str, data_dir: str) -> str:
    """The images file of `name` in torchvision's folder or in data_dir itself, plain or gzipped."""
    found = first_file((os.path.join(data_dir, FOLDERS[name], "raw"), data_dir), IMAGES)
    if found:
        return found
    raise DataError(f"No {IMAGES}[.gz] in {os.path.join(data_dir, FOLDERS[name], 'raw')} or {data_dir}; run "
                    f"`python data.py download {name} --data-dir {data_dir}` or give --set data_dir= the folder.")


def read_idx(path: str) -> np.ndarray:
    """A uint8 [N, rows, columns] IDX file (LeCun et al.'s format: big-endian magic, sizes, then the bytes)."""
    raw = read_bytes(path, "python data.py download mnist or fashion_mnist")
    header = np.frombuffer(raw[:16], dtype=">u4") if len(raw) >= 16 else np.zeros(0)
    if len(header) < 4 or header[0] != IDX_UBYTE_3D:
        raise DataError(f"{path} is not an IDX file of uint8 images (magic {hex(int(header[0])) if len(header) else '?'}"
                        f", expected {hex(IDX_UBYTE_3D)}); download it again.")
    count, rows, columns = (int(v) for v in header[1:4])
    if len(raw) != 16 + count * rows * columns:
        raise DataError(f"{path} holds {len(raw) - 16:,} bytes of pixels where its header says {count:,} images of "
                        f"{rows} × {columns}; it is truncated: download it again.")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows, columns)


def resized(images: np.ndarray, chunk: int = 4096) -> torch.Tensor:
    """uint8 [N, h, w] → uint8 [N, 1, 64, 64], bilinear with antialiasing, a chunk at a time."""
    out = torch.empty(len(images), 1, 64, 64, dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        part = torch.tensor(images[start:start + chunk], dtype=torch.float32)[:, None]  # a copy: the file is read-only
        scaled = torch.nn.functional.interpolate(part, size=(64, 64), mode="bilinear", antialias=True,
                                                 align_corners=False)
        out[start:start + chunk] = scaled.round_().clamp_(0, 255).to(torch.uint8)
    return out


class IdxImages:
    """A training set of 28 × 28 grey images (MNIST, Fashion-MNIST) at 64 × 64; no factors."""

    channels = 1

    def __init__(self, name: str, data_dir: str, device: torch.device | str = "cpu"):
        self.device, self.path = torch.device(device), find(name, data_dir)
        self._images = resized(read_idx(self.path)).to(self.device)

    def __len__(self) -> int:
        return len(self._images)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, None]:
        """indices [B] -> (images float32 [B, 1, 64, 64] in [0, 1] on self.device, None: no factors)."""
        return self._images[indices.to(self.device)].to(torch.float32).div_(255.0), None

    def end_of_run_pictures(self, model, run_dir: str, params) -> list[str]:
        return []


def make_idx(params, device: torch.device | str = "cpu") -> IdxImages:
    return IdxImages(params.dataset, params.data_dir, device)
