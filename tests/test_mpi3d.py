"""MPI3D from its npz as distributed: the factor order of the file, the sizes taken from its length (today's release
or the older one), the one-time memory-mapped copy, and every bad file as one sentence before a run folder exists."""
import numpy as np
import pytest
import torch

import main
from betavae.errors import DataError
from betavae.sources import mpi3d
from data import make_dataset
from params import Params
from test_dataset_conformance import TINY_MPI3D, marked_images

COUNT = int(np.prod(TINY_MPI3D))
OLDER = (1, 2, 1, 1, 2, 3, 2)


@pytest.fixture(autouse=True)
def tiny_releases(monkeypatch):
    monkeypatch.setattr(mpi3d, "RELEASES", {COUNT: TINY_MPI3D, int(np.prod(OLDER)): OLDER})


@pytest.mark.parametrize("sizes", [TINY_MPI3D, OLDER], ids=["today", "older"])
def test_the_sizes_come_from_the_file_and_its_order_is_kept(sizes, tmp_path):
    count = int(np.prod(sizes))
    np.savez(tmp_path / "real.npz", images=marked_images(count))  # the name the real variant is distributed under
    dataset = make_dataset(Params(dataset="mpi3d_real", data_dir=str(tmp_path)))
    assert dataset.factor_sizes == sizes and len(dataset) == count and isinstance(dataset._images, np.memmap)
    for row in (0, 5, count - 1):
        image = dataset.images(torch.tensor([[0, *np.unravel_index(row, sizes)]]))[0]
        assert round(float(image[0, 0, 0]) * 255) + 256 * round(float(image[0, 0, 1]) * 255) == row
    assert (tmp_path / "mpi3d_real_images.npy").is_file()


def bad_files():
    return {"wrong length": (lambda p: np.savez(p, images=np.zeros((COUNT + 1, 64, 64, 3), np.uint8)), "with N"),
            "wrong key": (lambda p: np.savez(p, imgs=np.zeros((COUNT, 64, 64, 3), np.uint8)), "no `images`"),
            "not a zip": (lambda p: p.write_bytes(b"PK\x03\x04" + b"\0" * 50), "truncated or corrupt"),
            "float": (lambda p: np.savez(p, images=np.zeros((COUNT, 64, 64, 3), np.float32)), "uint8")}


@pytest.mark.parametrize("case", [None, *bad_files()])
def test_a_missing_or_bad_file_is_one_sentence_and_exit_2_before_a_run_folder(case, tmp_path, capsys):
    if case is not None:
        bad_files()[case][0](tmp_path / "mpi3d_toy.npz")
    with pytest.raises(DataError, match="No mpi3d_toy.npz" if case is None else bad_files()[case][1]):
        make_dataset(Params(dataset="mpi3d_toy", data_dir=str(tmp_path)))
    args = ["--set", "dataset=mpi3d_toy", f"data_dir={tmp_path}", f"out_dir={tmp_path / 'runs'}", "steps=1"]
    assert main.main(args) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "runs").exists()
