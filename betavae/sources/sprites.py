"""dSprites as a dataset: the 737,280 images from DeepMind's npz when it is in data_dir, else rendered exactly from
their factor classes, and the colour and noisy variants of disentanglement_lib drawn over them."""
from __future__ import annotations

import functools
import os

import numpy as np
import torch

from betavae.errors import DataError

from betavae.sources.dsprites import (DATASET_SIZE, LATENT_NAMES, LATENT_SIZES, NPZ_NAME, all_latent_classes,
                                      load_npz_images, render_dsprites, render_mask_torch)
from betavae.sources.grid import FactorGrid
from betavae.sources.variants import VARIANTS

SCREAM_SOURCE = "https://upload.wikimedia.org/wikipedia/commons/f/f4/The_Scream.jpg"


class DSprites:
    """dSprites as ground-truth factors plus images drawn by index, from the real npz when present, else rendered on the fly."""

    channels = 1
    factor_names = LATENT_NAMES[1:]  # colour has a single value, so it is not a factor
    factor_sizes = LATENT_SIZES[1:]
    factor_categories = {"shape": ["square", "ellipse", "heart"]}  # unordered classes, drawn by name

    def __init__(self, data_dir: str | None, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        path = os.path.join(data_dir, NPZ_NAME) if data_dir is not None else None
        self._npz_images: torch.Tensor | None = None
        if path is not None and os.path.exists(path):
            images = load_npz_images(path)
            # The 3 GB of images live on the GPU when there is one to avoid a host copy per batch;
            # a GPU too small for them still works, gathering each batch on the host instead.
            if self.device.type == "cuda":
                try:
                    images = images.to(self.device)
                except torch.cuda.OutOfMemoryError:
                    pass
            self._npz_images = images
            self.source = "npz"
        else:
            self.source = "rendered"
        classes = all_latent_classes()
        self._latents_classes = torch.from_numpy(classes).to(self.device)
        self._grid = FactorGrid(classes[:, 1:], self.factor_sizes, self.device)  # the mapping NpzFactors uses too

    def __len__(self) -> int:
        return DATASET_SIZE

    @property
    def latents_classes(self) -> torch.Tensor:
        """int64 [737280, 6] in npz order, on self.device."""
        return self._latents_classes

    def images(self, latents_classes: torch.Tensor) -> torch.Tensor:
        """[B, 6] int64 -> float32 [B, 1, 64, 64] in {0, 1} on self.device."""
        classes = latents_classes.to(self.device, torch.int64)
        if self._npz_images is not None:
            index = self._grid.rows(classes[:, 1:])  # [B]
            pixels = self._npz_images[index.to(self._npz_images.device)]  # [B, 64, 64] uint8
        elif self.device.type == "cpu":
            # The numpy renderer measured faster than torch's on CPU for training batch sizes.
            pixels = torch.from_numpy(render_dsprites(classes.numpy()))
        else:
            pixels = render_mask_torch(classes)
        return pixels.to(self.device, torch.float32).unsqueeze(1)  # [B, 1, 64, 64]

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """indices [B] -> (images float32 [B, 1, 64, 64], factors int64 [B, 5]) on self.device."""
        classes = self._latents_classes[indices.to(self.device)]  # [B, 6]
        return self.images(classes), classes[:, 1:].contiguous()

    def end_of_run_pictures(self, model, run_dir: str, params) -> list[str]:
        """None: dSprites' factor pictures come with every sample (traverse.save_all), its scores from metrics.py."""
        return []


class DSpritesVariant(DSprites):
    """color_dsprites or noisy_dsprites (betavae/sources/variants.py): dSprites' sprites and five factors in 3 channels,
    the colour or noise a function of the image's dSprites row and `seed`."""

    channels = 3

    def __init__(self, variant: str, seed: int, data_dir: str | None, device: torch.device | str = "cpu"):
        super().__init__(data_dir, device)
        self.variant, self.seed, self._draw = variant, seed, VARIANTS[variant]
        if variant == "scream_dsprites":  # the picture behind every sprite, read once
            self._draw = functools.partial(self._draw, read_scream(data_dir).to(self.device))

    def images(self, latents_classes: torch.Tensor) -> torch.Tensor:
        """[B, 6] int64 -> float32 [B, 3, 64, 64] in [0, 1] on self.device."""
        classes = latents_classes.to(self.device, torch.int64)
        return self._draw(super().images(classes), self._grid.rows(classes[:, 1:]), self.seed)


SCREAM_FILES = ("scream/scream.jpg", "scream.jpg")  # disentanglement_lib's place in its data folder, or data_dir's


def read_scream(data_dir: str | None) -> torch.Tensor:
    """The Scream as float [3, H, W] in [0, 1], shrunk to fit 350 × 274 as disentanglement_lib does (PIL thumbnail)."""
    from PIL import Image

    folder = data_dir or "."
    found = [os.path.join(folder, f) for f in SCREAM_FILES if os.path.isfile(os.path.join(folder, f))]
    if not found:
        raise DataError(f"No scream/scream.jpg in {folder}; fetch The Scream (public domain) from "
                        f"{SCREAM_SOURCE} into {os.path.join(folder, 'scream')} or give --set data_dir= the folder.")
    try:
        with Image.open(found[0]) as image:
            image = image.convert("RGB")
            image.thumbnail((350, 274))
            pixels = np.asarray(image, dtype=np.float32) / 255.0
    except (OSError, Image.DecompressionBombError):
        raise DataError(f"{found[0]} is not a readable image; fetch it again from {SCREAM_SOURCE}.") from None
    if min(pixels.shape[:2]) <= 64:
        raise DataError(f"{found[0]} is {pixels.shape[1]} × {pixels.shape[0]} pixels; The Scream is larger than "
                        f"64 × 64 after shrinking to 350 × 274: fetch it again from {SCREAM_SOURCE}.")
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def make_dsprites(params, device: torch.device | str = "cpu") -> DSprites:
    return DSprites(params.data_dir, device)


def make_variant(params, device: torch.device | str = "cpu") -> DSpritesVariant:
    return DSpritesVariant(params.dataset, params.data_seed, params.data_dir, device)
