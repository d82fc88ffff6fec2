"""SmallNORB from NYU's binary-matrix files (betavae/sources/smallnorb.py): camera 0, training before test, the
factor classes from the cat and info files (azimuth halved), each image where the files hold it; bad files are one
sentence."""
import numpy as np
import pytest
import torch

from betavae.errors import DataError
from betavae.sources import smallnorb
from test_dataset_conformance import norb_matrix


def write_split(folder, split, pixels, category, info, gzipped=False):
    for kind, array in (("dat", pixels), ("cat", category), ("info", info)):
        name = smallnorb.file_name(split, kind) + (".gz" if gzipped else "")
        (folder / name).write_bytes(norb_matrix(array, gzipped))


def two_splits(folder):
    pixels = np.zeros((3, 2, 96, 96), dtype=np.uint8)
    pixels[:, 0, 0, 0] = [10, 20, 30]                      # camera 0 marked by row
    pixels[:, 1] = 255                                     # camera 1 white: never read
    info = np.array([[0, 8, 34, 5], [3, 0, 0, 0], [9, 4, 10, 2]], dtype=np.int32)
    write_split(folder, "training", pixels, np.array([4, 0, 2], dtype=np.int32), info, gzipped=True)
    write_split(folder, "testing", pixels[:1] // 2, np.array([1], dtype=np.int32), info[:1])


def test_classes_and_images_come_from_the_files_in_disentanglement_libs_order(tmp_path):
    two_splits(tmp_path)
    data = smallnorb.SmallNORB(str(tmp_path))
    expected = [[4, 8, 17, 5], [0, 0, 0, 0], [2, 4, 5, 2], [1, 8, 17, 5]]   # category, elevation, azimuth / 2, light
    assert data.latents_classes[:, 1:].tolist() == expected and len(data) == 4
    images, factors = data.batch(torch.arange(4))
    assert images.shape == (4, 1, 64, 64) and images.max() < 0.2  # camera 0, not the white camera 1
    assert images[0, 0, 0, 0] > images[3, 0, 0, 0] > 0            # the test image comes after the training ones
    assert not data.complete_grid


def test_bad_files_are_one_sentence(tmp_path):
    with pytest.raises(DataError, match="python data.py download smallnorb"):
        smallnorb.SmallNORB(str(tmp_path))
    two_splits(tmp_path)
    path = tmp_path / smallnorb.file_name("testing", "dat")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        smallnorb.SmallNORB(str(tmp_path))
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match="not a SmallNORB matrix"):
        smallnorb.SmallNORB(str(tmp_path))
