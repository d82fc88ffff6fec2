"""CelebA at 64×64 from torchvision's layout, a bare img_align_celeba/ or any image folder; cached or decoded per batch."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import hashlib
import json
import os
import re
import tempfile
import zlib

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from betavae.errors import DataError
from betavae.sources.common import IMAGE_SIZE

SPLITS = {"train": 0, "valid": 1, "test": 2}  # the codes of list_eval_partition.txt
# Last image id of train, valid and test in the standard partition (000001–162770, –182637, –202599).
STANDARD_SPLIT_ENDS = np.array([162770, 182637, 202599])
PARTITION_FILE, ATTRIBUTE_FILE = "list_eval_partition.txt", "list_attr_celeba.txt"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
CACHE_VERSION = 1  # bump when decode_image changes, so every existing cache is rebuilt
DOWNLOAD_HELP = ("download img_align_celeba.zip, list_eval_partition.txt and list_attr_celeba.txt from "
                 "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (its Google-Drive or Baidu links) and unzip "
                 "them into {root}")


@dataclasses.dataclass
class Source:
    """The image files found on disk and the side files that came with them."""

    folder: str
    names: list[str]                          # image file names, sorted
    splits: np.ndarray                        # [N] int8 split code per name (3: in no split)
    attribute_names: tuple[str, ...] = ()     # the 40 CelebA attributes, when list_attr_celeba.txt is present
    attributes: np.ndarray | None = None      # [N, 40] int8 in {−1, 1}


def candidate_folders(data_dir: str) -> list[str]:
    """Where images are looked for, in order: torchvision's layout, a bare img_align_celeba/, then any image folder."""
    return [os.path.join(data_dir, "celeba", "img_align_celeba"), os.path.join(data_dir, "img_align_celeba"),
            os.path.join(data_dir, "celeba"), data_dir]


def _image_names(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        return []
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))


def _side_file(folder: str, name: str) -> str | None:
    """torchvision keeps the text files beside img_align_celeba/; a flat download keeps them inside it."""
    for place in (os.path.dirname(os.path.normpath(folder)), folder):
        if os.path.isfile(os.path.join(place, name)):
            return os.path.join(place, name)
    return None


def _read_table(path: str, header_lines: int) -> tuple[list[str], dict[str, list[str]]]:
    """A CelebA text table: `header_lines` lines of header, then 'name value value ...' rows."""
    try:
        with open(path) as file:
            lines = file.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"Could not read {path} ({error}); re-download it from the CelebA site.") from None
    header = lines[header_lines - 1].split() if header_lines else []
    rows = (line.split() for line in lines[header_lines:] if line.strip())
    return header, {row[0]: row[1:] for row in rows}


def _splits(folder: str, names: list[str], partition_path: str | None) -> np.ndarray:
    if partition_path is not None:
        _, table = _read_table(partition_path, 0)
        missing = [name for name in names if name not in table]
        if missing:
            raise DataError(f"{len(missing)} images in {folder} (e.g. {missing[0]}) are not listed in {partition_path}; "
                            f"remove them or restore the original {PARTITION_FILE}.")
        return np.array([int(table[name][0]) for name in names], dtype=np.int8)
    if names and all(re.fullmatch(r"\d{6}\.(jpg|png)", name) for name in names):
        ids = np.array([int(name[:6]) for name in names])
        return np.searchsorted(STANDARD_SPLIT_ENDS, ids).astype(np.int8)  # ids past 202599 get 3: no split
    # Any other folder: one image in ten, chosen by a hash of its name, is held out, so adding images moves none.
    return np.array([SPLITS["valid"] if zlib.crc32(n.encode()) % 10 == 0 else SPLITS["train"] for n in names],
                    dtype=np.int8)


def _attributes(folder: str, names: list[str], path: str) -> tuple[tuple[str, ...], np.ndarray]:
    header, table = _read_table(path, 2)
    try:
        values = np.array([[int(v) for v in table[name]] for name in names], dtype=np.int8)
    except (KeyError, ValueError) as error:
        raise DataError(f"{path} does not describe the images in {folder} ({type(error).__name__}: {error}); "
                        f"restore the original {ATTRIBUTE_FILE} or delete it.") from None
    if values.shape[1:] != (len(header),):
        raise DataError(f"{path} has {values.shape[1:]} values per image for {len(header)} attribute names; "
                        f"restore the original {ATTRIBUTE_FILE} or delete it.")
    return tuple(header), values


def find_celeba(data_dir: str) -> Source:
    """The first candidate folder holding images, its splits and, when present, its attributes."""
    for folder in candidate_folders(data_dir):
        names = _image_names(folder)
        if names:
            break
    else:
        raise DataError(f"No CelebA images (.jpg/.jpeg/.png) in {', '.join(candidate_folders(data_dir))}: "
                        f"{DOWNLOAD_HELP.format(root=os.path.join(data_dir, 'celeba'))}, or run with --set download=true.")
    splits = _splits(folder, names, _side_file(folder, PARTITION_FILE))
    attribute_path = _side_file(folder, ATTRIBUTE_FILE)
    if attribute_path is None:
        return Source(folder, names, splits)
    return Source(folder, names, splits, *_attributes(folder, names, attribute_path))


def download_celeba(data_dir: str) -> None:
    """torchvision's downloader (Google Drive, through gdown); DataError with the manual route when it fails."""
    import torchvision

    try:
        torchvision.datasets.CelebA(root=data_dir, split="all", target_type=[], download=True)
    except Exception as error:  # gdown, zipfile and urllib raise many types; all mean the same to the user
        raise DataError(f"torchvision could not download CelebA ({type(error).__name__}: {error}); Google Drive "
                        f"often refuses it for exceeding its daily quota (\"Quota exceeded\", BadZipFile) and its "
                        f"downloader needs `pip install gdown`, so instead "
                        f"{DOWNLOAD_HELP.format(root=os.path.join(data_dir, 'celeba'))}.") from None


# PIL's UnidentifiedImageError and truncated files are OSErrors; a header claiming more pixels than
# Image.MAX_IMAGE_PIXELS × 2 (e.g. 20000 × 20000) raises DecompressionBombError, which is not.
UNREADABLE = (OSError, Image.DecompressionBombError)
LISTED = 10  # unreadable files named in the error itself; the rest go to a file beside the cache


def unreadable_error(failures: list[tuple[str, str]], list_dir: str) -> DataError:
    """One DataError naming every unreadable image: all of them when few, else the first LISTED and a file of all."""
    if len(failures) == 1:
        path, reason = failures[0]
        return DataError(f"{path} is not a readable image ({reason}); delete or replace it.")
    shown = ", ".join(f"{path} ({reason})" for path, reason in failures[:LISTED])
    rest = ""
    if len(failures) > LISTED:
        list_path = os.path.join(list_dir, "unreadable_images.txt")
        try:
            os.makedirs(list_dir, exist_ok=True)
            with open(list_path, "w") as file:
                file.writelines(f"{path}\t{reason}\n" for path, reason in failures)
            rest = f" and {len(failures) - LISTED} more, all listed in {list_path}"
        except OSError:
            rest = f" and {len(failures) - LISTED} more"
    return DataError(f"{len(failures)} CelebA images are not readable: {shown}{rest}; delete or replace them.")


def _decode_or_reason(path: str, crop: int) -> np.ndarray | str:
    try:
        return decode_image(path, crop)
    except DataError as error:
        return re.sub(r"^.* is not a readable image \((.*)\); delete or replace it\.$", r"\1", str(error))


def _header_reason(path: str) -> str | None:
    """Why PIL cannot open `path` from its header alone (format, size, structure), or None; milliseconds per file."""
    try:
        with Image.open(path) as image:
            image.verify()
    except UNREADABLE as error:
        return str(error) or type(error).__name__
    return None


def check_images(paths: list[str], pool: concurrent.futures.Executor, list_dir: str) -> None:
    """For celeba_loader=workers: find every unreadable image at start, not when a batch draws it."""
    failures = [(path, reason) for path, reason in zip(paths, pool.map(_header_reason, paths, chunksize=256))
                if reason is not None]
    if failures:
        raise unreadable_error(failures, list_dir)


def decode_image(path: str, crop: int) -> np.ndarray:
    """The original project's preprocessing: centre crop of side `crop` (0: the largest square), resize to 64.

    Same pixels as torchvision's CenterCrop(crop) then Resize(64) on a PIL image: uint8 [3, 64, 64].
    """
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except UNREADABLE as error:
        raise DataError(f"{path} is not a readable image ({error}); delete or replace it.") from None
    width, height = image.size
    side = min(crop or min(width, height), width, height)
    left, top = int(round((width - side) / 2.0)), int(round((height - side) / 2.0))
    image = image.crop((left, top, left + side, top + side)).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    return np.asarray(image).transpose(2, 0, 1).copy()  # [3, 64, 64]


def source_fingerprint(folder: str, names: list[str], crop: int) -> str:
    """Changes whenever a file is added, removed, rewritten or the preprocessing changes."""
    digest = hashlib.sha256(f"{CACHE_VERSION} {crop} {IMAGE_SIZE}\n".encode())
    for name in names:
        stat = os.stat(os.path.join(folder, name))
        digest.update(f"{name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def load_or_build_cache(paths: list[str], crop: int, cache_path: str, fingerprint: str,
                        pool: concurrent.futures.Executor) -> np.ndarray:
    """uint8 [N, 3, 64, 64] memory-mapped from cache_path, decoded afresh when its fingerprint does not match."""
    meta_path = cache_path + ".json"
    try:
        with open(meta_path) as file:
            meta = json.load(file)
        if meta.get("fingerprint") == fingerprint:
            images = np.load(cache_path, mmap_mode="r")
            if images.shape == (len(paths), 3, IMAGE_SIZE, IMAGE_SIZE) and images.dtype == np.uint8:
                return images
    except (OSError, ValueError):  # absent, half-written or foreign files: rebuild
        pass
    folder = os.path.dirname(cache_path)
    try:
        os.makedirs(folder, exist_ok=True)
        # Written under a temporary name and renamed, so an interrupted build never passes for a cache.
        for stale in glob.glob(os.path.join(glob.escape(folder), "*.npy.part")):  # left by a killed build (~2 GB)
            os.remove(stale)
        handle, temporary = tempfile.mkstemp(dir=folder, suffix=".npy.part")
        os.close(handle)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 would keep the cache from a group
        try:
            images = np.lib.format.open_memmap(temporary, "w+", np.uint8, (len(paths), 3, IMAGE_SIZE, IMAGE_SIZE))
            chunk = 1024
            with tqdm(total=len(paths), desc=f"decoding into {os.path.basename(cache_path)}", unit="image",
                      leave=False) as bar:
                failures = []  # every unreadable file is named in one error, so one retry fixes them all
                for start in range(0, len(paths), chunk):
                    part = paths[start:start + chunk]
                    for offset, (path, pixels) in enumerate(zip(part, pool.map(_decode_or_reason, part,
                                                                                [crop] * len(part)))):
                        if isinstance(pixels, str):
                            failures.append((path, pixels))
                        elif not failures:
                            images[start + offset] = pixels
                    bar.update(len(part))
                if failures:
                    raise unreadable_error(failures, folder)
            images.flush()
            del images
            os.replace(temporary, cache_path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        with open(meta_path + ".part", "w") as file:
            json.dump({"fingerprint": fingerprint, "count": len(paths), "crop": crop}, file)
        os.replace(meta_path + ".part", meta_path)
    except OSError as error:
        raise DataError(f"Could not write the CelebA cache {cache_path} ({error.strerror}); make data_dir writable "
                        f"or decode per batch with --set celeba_loader=workers.") from None
    return np.load(cache_path, mmap_mode="r")


class CelebA:
    """One split of CelebA as float images in [0, 1] by index; no ground-truth factors, optional attributes."""

    channels = 3

    def __init__(self, source: Source, split: str, crop: int = 148, loader: str = "cache", workers: int = 4,
                 device: torch.device | str = "cpu", cache_dir: str | None = None):
        self.source, self.split, self.crop, self.loader, self.workers = source, split, crop, loader, workers
        self.device, self.cache_dir = torch.device(device), cache_dir
        rows = np.flatnonzero(source.splits == SPLITS[split])
        if rows.size == 0:
            raise DataError(f"No images of the CelebA {split} split in {source.folder}; add them or fix "
                            f"{PARTITION_FILE}.")
        self.paths = [os.path.join(source.folder, source.names[i]) for i in rows]
        self.attribute_names = source.attribute_names
        self.attributes = None if source.attributes is None else torch.from_numpy(source.attributes[rows])  # [N, 40]
        # PIL releases the GIL while it decodes and resizes, so threads decode in parallel without pickling.
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
        self._held_out: CelebA | None = None
        self._cache: np.ndarray | torch.Tensor | None = None
        if loader == "workers":
            check_images(self.paths, self._pool, cache_dir or source.folder)
        if loader == "cache":
            cache_path = os.path.join(cache_dir or source.folder, f"celeba_{split}_crop{crop}.npy")
            fingerprint = source_fingerprint(source.folder, [source.names[i] for i in rows], crop)
            self._cache = load_or_build_cache(self.paths, crop, cache_path, fingerprint, self._pool)
            # 2.0 GB for the training split: on the GPU it saves a host gather and copy per step.
            if self.device.type == "cuda":
                try:
                    self._cache = torch.from_numpy(np.ascontiguousarray(self._cache)).to(self.device)
                except torch.cuda.OutOfMemoryError:
                    pass

    def __len__(self) -> int:
        return len(self.paths)

    def images(self, indices: torch.Tensor) -> torch.Tensor:
        """indices [B] -> uint8 [B, 3, 64, 64] on self.device."""
        if isinstance(self._cache, torch.Tensor):
            return self._cache[indices.to(self._cache.device)]
        rows = indices.cpu().numpy()
        if self._cache is not None:
            pixels = torch.from_numpy(self._cache[rows])  # fancy indexing copies out of the memmap
        else:
            pixels = torch.from_numpy(np.stack(list(self._pool.map(decode_image, [self.paths[i] for i in rows],
                                                                   [self.crop] * len(rows)))))
        if self.device.type == "cuda":
            return pixels.pin_memory().to(self.device, non_blocking=True)
        return pixels

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, None]:
        """indices [B] -> (images float32 [B, 3, 64, 64] in [0, 1] on self.device, None: no factors)."""
        return self.images(indices).to(torch.float32).div_(255.0), None

    def held_out(self) -> CelebA | None:
        """The valid split with the same settings (built on first use), or None when the source has none."""
        if self._held_out is None and self.split != "valid" and (self.source.splits == SPLITS["valid"]).any():
            self._held_out = CelebA(self.source, "valid", self.crop, self.loader, self.workers, self.device,
                                    self.cache_dir)
        return self._held_out

    def end_of_run_pictures(self, model, run_dir: str, params) -> list[str]:
        """attribute_correlation.png and .csv from held-out images; none when the source has no attribute labels."""
        from betavae.pictures.attributes import save_attribute_correlations  # late: matplotlib at a run's end

        path = save_attribute_correlations(model, self, run_dir, params.val_images)
        return [path] if path else []


def make_celeba(params, device: torch.device | str = "cpu") -> CelebA:
    """The training split for params; downloads first only when params.download asks for it."""
    try:
        source = find_celeba(params.data_dir)
    except DataError:
        if not params.download:
            raise
        download_celeba(params.data_dir)
        source = find_celeba(params.data_dir)
    dataset = CelebA(source, "train", params.celeba_crop, params.celeba_loader, params.num_workers, device,
                     os.path.join(params.data_dir, "celeba_cache"))
    dataset.held_out()  # built now, so its cache is decoded and its errors surface before training starts
    return dataset
