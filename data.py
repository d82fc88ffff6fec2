"""The datasets a run trains on, at 64×64: dSprites (DeepMind's npz, or rendered exactly when it is absent), its colour
and noisy variants, a user's npz in dSprites' layout, and CelebA, chosen by params.dataset; `python data.py
download NAME|render` fetches a dataset's published files or previews the renderer."""
from __future__ import annotations

import argparse
import sys

import numpy as np

from betavae.errors import DataError
from betavae.sources.common import IMAGE_SIZE
from betavae.sources import interface
from betavae.sources.interface import REGISTRY, make_dataset  # noqa: F401
from betavae.sources.npz import NpzFactors  # noqa: F401
from betavae.sources.sprites import DSprites, DSpritesVariant, make_dsprites, make_variant  # noqa: F401
# Re-exported: data.py is where scripts and tests look up dSprites' factors and renderer.
from betavae.sources.dsprites import (DATASET_SIZE, LATENT_NAMES, LATENT_SIZES, LATENT_STRIDES, NPZ_NAME,  # noqa: F401
                                      render_mask_torch, all_latent_classes, classes_to_index, classes_to_values,
                                      latent_possible_values, load_npz_images, render_dsprites)


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
    download = commands.add_parser("download", help="download a dataset's files as published: size stated first, "
                                                    "progress, checksum verified, resumable")
    download.add_argument("name", nargs="?", default="dsprites", choices=list(REGISTRY),
                          help="the dataset (default dsprites)")
    download.add_argument("--data-dir", default="data", help="the folder runs read (params.data_dir; default data)")
    download.add_argument("--unchecked", action="store_true",
                          help="also fetch files whose publisher states no checksum (3D Chairs, The Scream), unverified")
    render = commands.add_parser("render", help="save a preview grid of rendered sprites")
    render.add_argument("--out", required=True)
    arguments = parser.parse_args(argv)
    try:
        if arguments.command == "download":
            paths = interface.download(arguments.name, arguments.data_dir, unchecked=arguments.unchecked)
            print(f"saved {', '.join(paths)}; train with --set dataset={arguments.name} data_dir={arguments.data_dir}")
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


# A further dataset is a class in betavae/sources/ and its entry in betavae/sources/interface.py REGISTRY.

if __name__ == "__main__":
    sys.exit(main())
