"""MPI3D (Gondal et al. 2019, the NeurIPS 2019 disentanglement challenge's data): toy, realistic and real, read from
the npz files as distributed (key `images`, uint8 [N, 64, 64, 3]) and memory-mapped from a one-time copy of that array
in data_dir, so the 12.7 GB of images are never loaded whole."""
from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np
import torch

from betavae.errors import DataError
from betavae.sources.interface import REGISTRY
from betavae.sources.memmap import MemmapGrid, copy_stream, fits
from betavae.sources.npz import member_header

NAMES = tuple(name for name, _ in REGISTRY["mpi3d_toy"].factors)
TODAY = tuple(size for _, size in REGISTRY["mpi3d_toy"].factors)
# Factor sizes by the file's length: today's release, and the older one disentanglement_lib hard-codes (4 x 4).
RELEASES = {int(np.prod(TODAY)): TODAY, 460_800: (4, 4, *TODAY[2:])}
FILES = {"mpi3d_toy": ("mpi3d_toy.npz",), "mpi3d_realistic": ("mpi3d_realistic.npz",),
         "mpi3d_real": ("mpi3d_real.npz", "real.npz")}
SOURCE = "https://storage.googleapis.com/mpi3d_disentanglement_dataset/data/, CC BY 4.0"


def _images_header(archive: zipfile.ZipFile, path: str) -> tuple[tuple, np.dtype, int]:
    """The `images` array's shape, dtype and stored size, from its .npy header without loading it."""
    if "images.npy" not in archive.namelist():
        raise DataError(f"{path} has no `images` array (it holds {', '.join(archive.namelist())}); it is not an "
                        f"MPI3D npz.")
    shape, dtype = member_header(archive, "images")
    return shape, dtype, archive.getinfo("images.npy").file_size


def read_mpi3d(name: str, data_dir: str, say=print) -> tuple[np.ndarray, tuple[int, ...]]:
    """(images uint8 [N, 64, 64, 3], memory-mapped; factor sizes from N) for `name`, its npz copied once to
    data_dir/<name>_images.npy; one DataError sentence for a missing, corrupt or mis-shaped file."""
    found = [os.path.join(data_dir, f) for f in FILES[name] if os.path.isfile(os.path.join(data_dir, f))]
    if not found:
        raise DataError(f"No {' or '.join(FILES[name])} in {data_dir}; run `python data.py download {name} --data-dir "
                        f"{data_dir}` (the 4 x 4 release) or put today's file there ({SOURCE}), or give --set "
                        f"data_dir= the folder that holds it.")
    path, cache = found[0], os.path.join(data_dir, f"{name}_images.npy")
    try:
        with zipfile.ZipFile(path) as archive:
            shape, dtype, size = _images_header(archive, path)
            sizes = RELEASES.get(shape[0]) if len(shape) == 4 else None
            if sizes is None or shape[1:] != (64, 64, 3) or dtype != np.uint8:
                lengths = " or ".join(f"{n:,}" for n in RELEASES)
                raise DataError(f"{path}'s images are {dtype} {list(shape)}; MPI3D has uint8 [N, 64, 64, 3] with N "
                                f"{lengths} (today's release or the older one).")
            if not fits(cache, tuple(shape)):
                with archive.open("images.npy") as member:
                    copy_stream(member, cache, size, os.path.basename(path), say)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as error:
        raise DataError(f"{path} cannot be read as an npz ({type(error).__name__}: {error}); it is truncated or "
                        f"corrupt: download it again ({SOURCE}).") from None
    return np.load(cache, mmap_mode="r"), sizes


class MPI3D(MemmapGrid):
    """One MPI3D variant by index and by factor classes (disentanglement_lib's mixed-radix order of the file)."""

    def __init__(self, name: str, data_dir: str, device: torch.device | str = "cpu"):
        images, sizes = read_mpi3d(name, data_dir)
        super().__init__(images, NAMES, sizes, device)


def make_mpi3d(params, device: torch.device | str = "cpu") -> MPI3D:
    return MPI3D(params.dataset, params.data_dir, device)
