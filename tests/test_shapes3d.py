"""Shapes3D from DeepMind's 3dshapes.h5: the factor order of the file, the one-time memory-mapped copy, and every
bad file as one sentence before a run folder exists."""
import h5py
import numpy as np
import pytest
import torch

import main
from betavae.errors import DataError
from betavae.sources import shapes3d
from data import make_dataset
from params import Params
from test_dataset_conformance import TINY_SHAPES, shapes3d_file


def test_the_image_at_given_factor_classes_is_the_one_the_file_holds_there(tmp_path, monkeypatch):
    data_dir, _ = shapes3d_file(tmp_path, monkeypatch)
    dataset = make_dataset(Params(dataset="shapes3d", data_dir=data_dir))
    sizes = [size for _, size in TINY_SHAPES]
    for row in (0, 1, 17, 95):
        classes = np.unravel_index(row, sizes)                      # the file's mixed-radix order
        image = dataset.images(torch.tensor([[0, *classes]]))[0]
        marker = round(float(image[0, 0, 0]) * 255) + 256 * round(float(image[0, 0, 1]) * 255)
        assert marker == row
    assert (tmp_path / shapes3d.CACHE).is_file()                    # converted once, memory-mapped afterwards
    mtime = (tmp_path / shapes3d.CACHE).stat().st_mtime_ns
    make_dataset(Params(dataset="shapes3d", data_dir=data_dir))
    assert (tmp_path / shapes3d.CACHE).stat().st_mtime_ns == mtime  # not converted again
    assert isinstance(dataset._images, np.memmap)


def bad_files():
    def truncated(path):
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)

    def wrong_shape(path):
        with h5py.File(path, "w") as file:
            file["images"] = np.zeros((96, 32, 32, 3), np.uint8)
            file["labels"] = np.zeros((96, 6))

    def no_labels(path):
        with h5py.File(path, "w") as file:
            file["images"] = np.zeros((96, 64, 64, 3), np.uint8)

    def shuffled(path):
        grid = np.stack([g.ravel() for g in np.indices([s for _, s in TINY_SHAPES])], axis=1)[::-1]
        with h5py.File(path, "w") as file:
            file["images"], file["labels"] = np.zeros((96, 64, 64, 3), np.uint8), grid * 1.0
    return {"truncated": (truncated, "truncated or corrupt"), "wrong shape": (wrong_shape, "Shapes3D has uint8"),
            "no labels": (no_labels, "no labels dataset"), "shuffled": (shuffled, "factor order")}


@pytest.mark.parametrize("case", [None, *bad_files()])
def test_a_missing_or_bad_file_is_one_sentence_and_exit_2_before_a_run_folder(case, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shapes3d, "FACTORS", TINY_SHAPES)
    if case is not None:
        make, _ = bad_files()[case]
        make(tmp_path / "3dshapes.h5")
    with pytest.raises(DataError, match="No 3dshapes.h5" if case is None else bad_files()[case][1]):
        make_dataset(Params(dataset="shapes3d", data_dir=str(tmp_path)))
    args = ["--set", "dataset=shapes3d", f"data_dir={tmp_path}", f"out_dir={tmp_path / 'runs'}", "steps=1"]
    assert main.main(args) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "runs").exists()
