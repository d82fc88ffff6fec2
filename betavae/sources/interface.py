"""What a dataset is: the interface every dataset implements, and the registry of the datasets `params.dataset` names.

A dataset gives float images in [0, 1] at 64 × 64 by index, and, when it has ground-truth factors, their names and
sizes, the factor classes of every image (`latents_classes`, column 0 a constant 0 as dSprites' colour, the factors
after it) and the images of chosen factor classes (what the sampling metrics and the factor pictures need). The
registry is plain data (no torch), so `params`, sweeps and `--help` learn the datasets from it; adding a dataset is
one class and one entry here.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from betavae.download import Remote


@runtime_checkable
class Dataset(Protocol):
    channels: int

    def __len__(self) -> int: ...

    def batch(self, indices):
        """indices int64 [B] -> (images float32 [B, C, 64, 64] in [0, 1], factor classes int64 [B, K] or None)."""

    def end_of_run_pictures(self, model, run_dir: str, params) -> list[str]:
        """The pictures this dataset adds at the end of a run (its paths); the factor pictures are drawn elsewhere."""


@runtime_checkable
class FactorDataset(Dataset, Protocol):
    factor_names: list[str]
    factor_sizes: tuple[int, ...]

    @property
    def latents_classes(self):
        """int64 [N, 1 + K]: every image's factor classes after a constant column 0."""

    def images(self, latents_classes):
        """int64 [B, 1 + K] -> the images of those factor classes, float32 [B, C, 64, 64] (complete grids)."""


@dataclass(frozen=True)
class Entry:
    """One dataset of the registry: how to build it and what the docs and the time estimate say about it."""
    name: str
    build: str                         # "module:callable", called with (params, device)
    channels: int
    images: int
    factors: tuple[tuple[str, int], ...] = ()   # (name, size) in the order of the files; () = no factors
    description: str = ""
    files: tuple[Remote, ...] = ()     # what `python data.py download NAME` fetches into data_dir
    by_hand: str = ""                  # where its files are published, when no checksum is
    unchecked: tuple[Remote, ...] = ()  # files with no published checksum: fetched with --unchecked only


# Checksums as their publishers or TensorFlow Datasets' url_checksums state them.
DSPRITES_FILES = (Remote("https://github.com/deepmind/dsprites-dataset/raw/master/"
                         "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz", 0, "md5:7da33b31b13a06f4b04a70402ce90c2e",
                         "Apache 2.0, DeepMind"),)
SHAPES3D_FILES = (Remote("https://storage.googleapis.com/3d-shapes/3dshapes.h5", 267_573_662,
                         "0a0f6ed98baff276a50f3a081a7434d788da63cb135a98189b2a5b5769be1785", "Apache 2.0, DeepMind"),)
MNIST_FILES = (Remote("https://storage.googleapis.com/cvdf-datasets/mnist/train-images-idx3-ubyte.gz", 9_912_422,
                      "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                      "CC BY-SA 3.0, LeCun, Cortes & Burges"),)
FASHION_FILES = (Remote("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz",
                        26_421_880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                        "MIT, Zalando Research"),)
_NORB = "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/smallnorb-5x{}x9x18x6x2x96x96-{}-{}.mat.gz"
SMALLNORB_FILES = tuple(Remote(_NORB.format(ids, split, kind), size, checksum, "LeCun et al. 2004, NYU, for research")
                        for ids, split, kind, size, checksum in (
    ("46789", "training", "dat", 131_896_188, "5ffd6272a07d32695ee1082a26a41a93a37aab8c28da047f8c34ed348d214873"),
    ("46789", "training", "cat", 348, "2784e542c1922060691090952b6cd6278879a216c90f81476f0f00256d42cdaa"),
    ("46789", "training", "info", 71_052, "de7eb932ebe7a4ee16217fead60660d0eb3d23632c2f4d1c51f88c501c17bf32"),
    ("01235", "testing", "dat", 130_799_817, "cf7104eed3e51174d2f65b66d1e5878b9da233b886f161b0d88f4510ba2c7474"),
    ("01235", "testing", "cat", 347, "ecaf6d5bb8c3bc5eab9cf0258f6d2198dd474e016e374836fc097f2e5ff509ff"),
    ("01235", "testing", "info", 10_428, "16adf314226327ee006d1a44db8cfef52773c06c829951d5653a9f6f310248a2")))
# MPI3D's 4 x 4 release (disentanglement_lib's; today's 6 x 6 one publishes no checksum) and Cars3D's archive, with
# the MD5s the disent library (Michlo, MIT) records for them.
MPI3D_FILES = {kind: (Remote(f"https://storage.googleapis.com/disentanglement_dataset/Final_Dataset/mpi3d_{kind}.npz", 0,
                             f"md5:{checksum}", "CC BY 4.0, Gondal et al. 2019 (the 4 x 4 release)"),)
               for kind, checksum in (("toy", "55889cb7c7dfc655d6e0277beee88868"),
                                      ("realistic", "59a6225b88b635365f70c91b3e52f70f"),
                                      ("real", "0f33f609918fb5c97996692f91129802"))}
CARS3D_FILES = (Remote("http://www.scottreed.info/files/nips2015-analogy-data.tar.gz", 0,
                       "md5:4e866a7919c1beedf53964e6f7a23686", "Reed et al. 2015, for research"),)
MPI3D_SOURCE = "https://storage.googleapis.com/mpi3d_disentanglement_dataset/data/ (CC BY 4.0)"


REGISTRY: dict[str, Entry] = {entry.name: entry for entry in (
    Entry("dsprites", "betavae.sources.sprites:make_dsprites", 1, 737_280,
          (("shape", 3), ("scale", 6), ("orientation", 40), ("posX", 32), ("posY", 32)),
          "DeepMind's dSprites (npz in data_dir, else rendered exactly)", DSPRITES_FILES),
    Entry("color_dsprites", "betavae.sources.sprites:make_variant", 3, 737_280,
          (("shape", 3), ("scale", 6), ("orientation", 40), ("posX", 32), ("posY", 32)),
          "dSprites in a random colour (disentanglement_lib)", DSPRITES_FILES),
    Entry("noisy_dsprites", "betavae.sources.sprites:make_variant", 3, 737_280,
          (("shape", 3), ("scale", 6), ("orientation", 40), ("posX", 32), ("posY", 32)),
          "dSprites on uniform noise (disentanglement_lib)", DSPRITES_FILES),
    Entry("scream_dsprites", "betavae.sources.sprites:make_variant", 3, 737_280,
          (("shape", 3), ("scale", 6), ("orientation", 40), ("posX", 32), ("posY", 32)),
          "dSprites inverted over a crop of The Scream (disentanglement_lib)", by_hand="scream/scream.jpg in data_dir "
          "from upload.wikimedia.org/wikipedia/commons/f/f4/The_Scream.jpg (public domain); dSprites as above",
          unchecked=(Remote("https://upload.wikimedia.org/wikipedia/commons/f/f4/The_Scream.jpg", 0, "",
                            "public domain, Munch 1893", "scream/scream.jpg"),)),
    Entry("celeba", "betavae.sources.celeba:make_celeba", 3, 162_770, (),
          "CelebA's training split from a local folder", by_hand="--set download=true (torchvision's Google-Drive "
          "downloader), or the files of mmlab.ie.cuhk.edu.hk/projects/CelebA.html"),
    Entry("shapes3d", "betavae.sources.shapes3d:make_shapes3d", 3, 480_000,
          (("floor_hue", 10), ("wall_hue", 10), ("object_hue", 10), ("scale", 8), ("shape", 4), ("orientation", 15)),
          "DeepMind's 3dshapes.h5 (Burgess & Kim 2018), memory-mapped", SHAPES3D_FILES),
    *(Entry(f"mpi3d_{kind}", "betavae.sources.mpi3d:make_mpi3d", 3, 1_036_800,
            (("object_color", 6), ("object_shape", 6), ("object_size", 2), ("camera_height", 3),
             ("background_color", 3), ("first_dof", 40), ("second_dof", 40)),
            f"MPI3D-{kind} (Gondal et al. 2019), memory-mapped; the older 4 x 4 release read too",
            MPI3D_FILES[kind], by_hand=MPI3D_SOURCE)
      for kind in ("toy", "realistic", "real")),
    Entry("smallnorb", "betavae.sources.smallnorb:make_smallnorb", 1, 48_600,
          (("category", 5), ("elevation", 9), ("azimuth", 18), ("lighting", 6)),
          "SmallNORB's six NYU files (LeCun et al. 2004), camera 0, training + test, 96 → 64 pixels; instance a "
          "nuisance", SMALLNORB_FILES),
    Entry("cars3d", "betavae.sources.cars3d:make_cars3d", 3, 17_568, (("elevation", 4), ("azimuth", 24), ("object", 183)),
          "Cars3D (Reed et al. 2015) from nips2015-analogy-data.tar.gz, objects in list.txt's order, 128 → 64 pixels",
          CARS3D_FILES),
    Entry("chairs", "betavae.sources.chairs:make_chairs", 1, 86_366, (), "3D Chairs' renders (Aubry et al. 2014) "
          "from rendered_chairs.tar, grey, centre-cropped, 64 pixels; no factors",
          by_hand="www.di.ens.fr/willow/research/seeing3Dchairs/data/rendered_chairs.tar",
          unchecked=(Remote("https://www.di.ens.fr/willow/research/seeing3Dchairs/data/rendered_chairs.tar", 0, "",
                            "Aubry et al. 2014, for research"),)),
    Entry("mnist", "betavae.sources.idx:make_idx", 1, 60_000, (), "MNIST's 60,000 training digits (LeCun et al. "
          "1998), torchvision's files, 28 → 64 pixels; no factors", MNIST_FILES),
    Entry("fashion_mnist", "betavae.sources.idx:make_idx", 1, 60_000, (), "Fashion-MNIST's 60,000 training images "
          "(Xiao et al. 2017), torchvision's files, 28 → 64 pixels; no factors", FASHION_FILES),
)}


def download(name: str, data_dir: str, say=print, unchecked: bool = False) -> list[str]:
    """Fetch dataset `name`'s files into data_dir (betavae/download.py: size, progress, checksum, resumable); files
    with no published checksum only when `unchecked` (their SHA-256 is printed)."""
    from betavae.download import fetch
    from betavae.errors import DataError

    entry = REGISTRY[name]
    files = entry.files or (entry.unchecked if unchecked else ())
    if not files:
        where = entry.by_hand or "nowhere: it is built in"
        advice = "add --unchecked to download it unverified, or " if entry.unchecked else ""
        raise DataError(f"{name} has no published checksum for its files; {advice}fetch them by hand into "
                        f"{data_dir} from {where}.")
    return [fetch(remote, os.path.join(data_dir, remote.filename), say) for remote in files]


def build(name: str, params, device):
    """The dataset `name` of the registry, built for params on device."""
    module, attribute = REGISTRY[name].build.split(":")
    return getattr(importlib.import_module(module), attribute)(params, device)


def make_dataset(params, device="cpu"):
    """The dataset params.dataset names (a registry name, or the path of an .npz in dSprites' layout) on device;
    DataError in one sentence when its files are missing or broken."""
    from betavae.errors import DataError

    if params.dataset.endswith(".npz"):
        from betavae.sources.npz import NpzFactors

        return NpzFactors(params.dataset, device)
    if params.dataset not in REGISTRY:
        raise DataError(f"Dataset '{params.dataset}' is not available; choose one of: {', '.join(REGISTRY)}.")
    return build(params.dataset, params, device)
