"""Cars3D (Reed et al. 2015) as disentanglement_lib reads it, from the archive as distributed: `nips2015-analogy-
data.tar.gz` (or its extracted `data/cars/` or `cars/` folder), one `car_*_mesh.mat` per object holding `im`, uint8
[128, 128, 3, 24 azimuths, 4 elevations]. Factors: elevation 4, azimuth 24, object 183, in the order disentanglement_lib
indexes them (elevation slowest). The objects are taken in the order of the archive's `cars/list.txt`:
disentanglement_lib numbers them in the order its file system lists the folder, which differs between machines.
Each image is resized from 128 to 64 pixels (bilinear, antialiased; disentanglement_lib uses PIL's antialiasing
thumbnail) and the whole set is kept once as data_dir/cars3d_images.npy (216 MB), memory-mapped afterwards."""
from __future__ import annotations

import io
import os
import tarfile

import numpy as np
import torch

from betavae.errors import DataError
from betavae.sources.memmap import MemmapGrid, fits

ARCHIVE = "nips2015-analogy-data.tar.gz"
CACHE = "cars3d_images.npy"
FACTORS = (("elevation", 4), ("azimuth", 24), ("object", 183))
SOURCE = "http://www.scottreed.info/files/nips2015-analogy-data.tar.gz"


class _Folder:
    """The meshes and list.txt from the archive, or from a folder it was extracted to."""

    def __init__(self, data_dir: str):
        self.archive = None
        for folder in (os.path.join(data_dir, "data", "cars"), os.path.join(data_dir, "cars")):
            if os.path.isfile(os.path.join(folder, "list.txt")):
                self.folder = folder
                return
        path = os.path.join(data_dir, ARCHIVE)
        if not os.path.isfile(path):
            raise DataError(f"No {ARCHIVE} (or its cars/ folder) in {data_dir}; run `python data.py download cars3d "
                            f"--data-dir {data_dir}` ({SOURCE}) or give --set data_dir= the folder that holds it.")
        try:
            self.archive = tarfile.open(path, "r:gz")
            self.members = {os.path.relpath(m.name, "data") if m.name.startswith("data/") else m.name: m
                            for m in self.archive.getmembers() if m.isfile()}
        except (tarfile.TarError, OSError, EOFError) as error:
            raise DataError(f"{path} is not a readable tar.gz ({error}); fetch it again from {SOURCE}.") from None
        self.path = path

    def read(self, name: str) -> bytes:
        """The bytes of cars/<name>; DataError when it is missing."""
        if self.archive is None:
            try:
                with open(os.path.join(self.folder, name), "rb") as file:
                    return file.read()
            except OSError:
                raise DataError(f"{os.path.join(self.folder, name)} is missing; extract the archive again.") from None
        member = self.members.get(f"cars/{name}")
        if member is None:
            raise DataError(f"{self.path} has no cars/{name}; it is not the Cars3D archive: fetch it from {SOURCE}.")
        try:
            return self.archive.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as error:
            raise DataError(f"{self.path} is truncated or corrupt ({error}); fetch it again from {SOURCE}.") from None


def read_cars3d(data_dir: str, say=print) -> np.ndarray:
    """uint8 [4 · 24 · 183, 64, 64, 3] in disentanglement_lib's order (elevation, azimuth, object), memory-mapped."""
    import scipy.io
    from tqdm import tqdm

    from betavae.sources.idx import resized

    sizes = tuple(size for _, size in FACTORS)
    count, cache = int(np.prod(sizes)), os.path.join(data_dir, CACHE)
    if fits(cache, (count, 64, 64, 3)):
        return np.load(cache, mmap_mode="r")
    source = _Folder(data_dir)
    names = [line.strip() for line in source.read("list.txt").decode().splitlines() if line.strip()]
    if len(names) != sizes[2]:
        raise DataError(f"cars/list.txt names {len(names)} objects; Cars3D has {sizes[2]}: fetch it from {SOURCE}.")
    say(f"converting Cars3D once to {cache} ({count * 64 * 64 * 3 / 1e6:.0f} MB, memory-mapped afterwards)")
    images = np.zeros((sizes[0], sizes[1], sizes[2], 64, 64, 3), dtype=np.uint8)
    for k, name in enumerate(tqdm(names, desc="converting cars3d", leave=False)):
        mat = name if name.endswith(".mat") else f"{name}.mat"
        try:
            mesh = scipy.io.loadmat(io.BytesIO(source.read(mat)))["im"]  # [128, 128, 3, 24, 4]
        except (ValueError, KeyError, TypeError) as error:
            raise DataError(f"cars/{mat} is not a Cars3D mesh ({error}); fetch the archive again.") from None
        if mesh.shape != (128, 128, 3, 24, 4):
            raise DataError(f"cars/{mat} holds `im` of shape {list(mesh.shape)}; Cars3D's is [128, 128, 3, 24, 4].")
        views = np.ascontiguousarray(mesh.transpose(4, 3, 2, 0, 1)).reshape(-1, 128, 128)  # [4 · 24 · 3, 128, 128]
        small = resized(views).numpy().reshape(sizes[0], sizes[1], 3, 64, 64)
        images[:, :, k] = small.transpose(0, 1, 3, 4, 2)
    partial = cache + ".part.npy"
    np.save(partial, images.reshape(count, 64, 64, 3))
    os.replace(partial, cache)
    return np.load(cache, mmap_mode="r")


class Cars3D(MemmapGrid):
    """Cars3D by index and by factor classes; images memory-mapped, converted to float per batch."""

    def __init__(self, data_dir: str, device: torch.device | str = "cpu"):
        super().__init__(read_cars3d(data_dir), [name for name, _ in FACTORS], [size for _, size in FACTORS], device)


def make_cars3d(params, device: torch.device | str = "cpu") -> Cars3D:
    return Cars3D(params.data_dir, device)
