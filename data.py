"""The datasets a run trains on, at 64×64: dSprites (DeepMind's npz, or rendered exactly when it is absent), its colour
and noisy variants, a user's npz in dSprites' layout, and CelebA, chosen by params.dataset; `python data.py
download|render` fetches dSprites or previews the renderer."""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

from betavae.errors import DataError
from betavae.sources.common import IMAGE_SIZE
from betavae.sources.grid import FactorGrid, FactorImages
from betavae.sources.interface import REGISTRY, build
from betavae.sources.npz import read_factor_npz
from betavae.sources.variants import VARIANTS
# Re-exported: data.py is where scripts and tests look up dSprites' factors and renderer.
from betavae.sources.dsprites import (DATASET_SIZE, LATENT_NAMES, LATENT_SIZES, LATENT_STRIDES, NPZ_NAME,  # noqa: F401
                                      render_mask_torch, all_latent_classes, classes_to_index, classes_to_values,
                                      download_dsprites, latent_possible_values, load_npz_images, render_dsprites)


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

    def images(self, latents_classes: torch.Tensor) -> torch.Tensor:
        """[B, 6] int64 -> float32 [B, 3, 64, 64] in [0, 1] on self.device."""
        classes = latents_classes.to(self.device, torch.int64)
        return self._draw(super().images(classes), self._grid.rows(classes[:, 1:]), self.seed)


class NpzFactors(FactorImages):
    """A user's npz in dSprites' layout (betavae/sources/npz.py): images held in memory, looked up by row or, when the
    factor grid is complete, by factor classes, through the FactorGrid that DSprites uses."""

    def __init__(self, path: str, device: torch.device | str = "cpu"):
        arrays = read_factor_npz(path)
        self.device, self.path = torch.device(device), path
        self.channels = arrays.images.shape[1]
        self.factor_names, self.factor_sizes, self.factor_values = arrays.names, arrays.sizes, arrays.values
        images = torch.from_numpy(arrays.images)  # uint8 [N, C, 64, 64]
        if self.device.type == "cuda":  # on the GPU when it fits, as DSprites' npz
            try:
                images = images.to(self.device)
            except torch.cuda.OutOfMemoryError:
                pass
        self._images, self._scale = images, arrays.scale
        classes = torch.from_numpy(arrays.classes)
        # A leading colour column of zeros, as DSprites' latents_classes, so the metrics and pictures read both alike.
        self._latents_classes = torch.cat([torch.zeros(len(classes), 1, dtype=torch.int64), classes], 1).to(self.device)
        self._grid = FactorGrid(arrays.classes, arrays.sizes, self.device)
        self.complete_grid = self._grid.complete

    def _pixels(self, rows: torch.Tensor) -> torch.Tensor:
        pixels = self._images[rows.to(self._images.device)]  # [B, C, 64, 64] uint8
        return pixels.to(self.device, torch.float32) * self._scale


def _render_preview(out: str) -> None:
    """Save a grid: one row per shape and scale extreme, columns sweeping orientation."""
    from matplotlib.image import imsave

    orientations = np.arange(0, 40, 4)  # 10 columns
    rows = [(shape, scale) for shape in range(3) for scale in (0, 5)]
    classes = np.array([[0, shape, scale, turn, 16, 16] for shape, scale in rows for turn in orientations])
    images = render_dsprites(classes).reshape(len(rows), len(orientations), IMAGE_SIZE, IMAGE_SIZE)
    grid = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=1)  # white gutters
    grid = grid.transpose(0, 2, 1, 3).reshape(len(rows) * (IMAGE_SIZE + 2), -1)
    imsave(out, grid, cmap="gray", vmin=0, vmax=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    download = commands.add_parser("download", help="download the dSprites npz")
    download.add_argument("--data-dir", required=True)
    render = commands.add_parser("render", help="save a preview grid of rendered sprites")
    render.add_argument("--out", required=True)
    arguments = parser.parse_args(argv)
    try:
        if arguments.command == "download":
            print(f"saved {download_dsprites(arguments.data_dir)}")
        else:
            _render_preview(arguments.out)
            print(f"saved {arguments.out}")
    except DataError as error:
        print(error, file=sys.stderr)
        return 2
    except OSError as error:
        print(f"Could not write {error.filename} ({error.strerror}); choose a writable path.", file=sys.stderr)
        return 2
    return 0


def make_dsprites(params, device: torch.device | str = "cpu") -> DSprites:
    return DSprites(params.data_dir, device)


def make_variant(params, device: torch.device | str = "cpu") -> DSpritesVariant:
    return DSpritesVariant(params.dataset, params.data_seed, params.data_dir, device)


# ---------------------------------------------------------------- choosing a dataset

def make_dataset(params, device: torch.device | str = "cpu"):
    """The dataset named by params.dataset (a name, or the path of an .npz); DataError when files are missing or broken."""
    if params.dataset.endswith(".npz"):
        return NpzFactors(params.dataset, device)
    if params.dataset not in REGISTRY:
        raise DataError(f"Dataset '{params.dataset}' is not available; choose one of: {', '.join(REGISTRY)}.")
    return build(params.dataset, params, device)


# A further dataset is a class (here or in betavae/sources/) and its entry in betavae/sources/interface.py REGISTRY.

if __name__ == "__main__":
    sys.exit(main())
