"""3D Chairs (Aubry et al. 2014) from `rendered_chairs.tar` as distributed, read in place (or from its extracted
`rendered_chairs/` folder): every `rendered_chairs/<chair>/renders/*.png` in name order (1,393 chairs × 62 views),
made grey, centre-cropped to 400 × 400 of its 600 × 600 and resized to 64 × 64 (antialiased), kept once as
data_dir/chairs_images.npy (354 MB) and memory-mapped afterwards. disentangling-vae, whose released chairs models
this matches, means to crop the same 400 × 400 (its `preprocess` computes the box but drops the cropped image, so its
files are the whole render resized). No ground-truth factors."""
from __future__ import annotations

import io
import os
import tarfile

import numpy as np
import torch

from betavae.errors import DataError

ARCHIVE, FOLDER, CACHE = "rendered_chairs.tar", "rendered_chairs", "chairs_images.npy"
CROP = 400
SOURCE = "https://www.di.ens.fr/willow/research/seeing3Dchairs/data/rendered_chairs.tar"


def _renders(data_dir: str):
    """(name, opener) of every render in name order, from the extracted folder or the tar."""
    folder = os.path.join(data_dir, FOLDER)
    if os.path.isdir(folder):
        names = sorted(os.path.relpath(os.path.join(root, f), data_dir) for root, _, files in os.walk(folder)
                       for f in files if f.endswith(".png") and os.path.basename(root) == "renders")
        return names, lambda name: open(os.path.join(data_dir, name), "rb")
    path = os.path.join(data_dir, ARCHIVE)
    if not os.path.isfile(path):
        raise DataError(f"No {ARCHIVE} (or its {FOLDER}/ folder) in {data_dir}; fetch it from {SOURCE} into {data_dir} "
                        f"or give --set data_dir= the folder that holds it.")
    try:
        archive = tarfile.open(path, "r:*")
        members = {m.name: m for m in archive.getmembers()
                   if m.isfile() and m.name.endswith(".png") and m.name.split("/")[-2:-1] == ["renders"]}
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DataError(f"{path} is not a readable tar ({error}); fetch it again from {SOURCE}.") from None
    return sorted(members), lambda name: io.BytesIO(archive.extractfile(members[name]).read())


def _small(file) -> np.ndarray:
    """One render → uint8 [64, 64]: grey, the centred CROP × CROP square, resized with antialiasing."""
    from PIL import Image

    with Image.open(file) as image:
        grey = image.convert("L")
        width, height = grey.size
        side = min(CROP, width, height)
        left, top = (width - side) // 2, (height - side) // 2
        return np.asarray(grey.crop((left, top, left + side, top + side)).resize((64, 64), Image.LANCZOS))


def read_chairs(data_dir: str, say=print) -> np.ndarray:
    """uint8 [N, 64, 64], memory-mapped; converted once (a progress bar, its size said first)."""
    from tqdm import tqdm

    cache = os.path.join(data_dir, CACHE)
    try:
        images = np.load(cache, mmap_mode="r")
        if images.ndim == 3 and images.shape[1:] == (64, 64) and images.dtype == np.uint8:
            return images
    except (OSError, ValueError):  # none yet, or an unfinished copy: convert again
        pass
    names, opener = _renders(data_dir)
    if not names:
        raise DataError(f"{data_dir} holds no {FOLDER}/<chair>/renders/*.png; fetch {SOURCE} again.")
    say(f"converting 3D Chairs once to {cache} ({len(names) * 4096 / 1e6:.0f} MB, memory-mapped afterwards)")
    partial = cache + ".part.npy"
    out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(names), 64, 64))
    for row, name in enumerate(tqdm(names, desc="converting chairs", leave=False)):
        try:
            out[row] = _small(opener(name))
        except (OSError, tarfile.TarError, EOFError) as error:
            raise DataError(f"{name} is not a readable image ({error}); fetch {SOURCE} again.") from None
    out.flush()
    del out
    os.replace(partial, cache)
    return np.load(cache, mmap_mode="r")


class Chairs:
    """3D Chairs' renders as grey 64 × 64 images by index; no factors."""

    channels = 1

    def __init__(self, data_dir: str, device: torch.device | str = "cpu"):
        self.device, self._images = torch.device(device), read_chairs(data_dir)

    def __len__(self) -> int:
        return len(self._images)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, None]:
        """indices [B] -> (images float32 [B, 1, 64, 64] in [0, 1] on self.device, None: no factors)."""
        pixels = torch.from_numpy(np.ascontiguousarray(self._images[indices.cpu().numpy()]))[:, None]
        return pixels.to(self.device, torch.float32).div_(255.0), None

    def end_of_run_pictures(self, model, run_dir: str, params) -> list[str]:
        return []


def make_chairs(params, device: torch.device | str = "cpu") -> Chairs:
    return Chairs(params.data_dir, device)
