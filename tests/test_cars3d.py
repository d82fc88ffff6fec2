"""Cars3D from its archive (betavae/sources/cars3d.py): the image at (elevation, azimuth, object) is the view the
object's mesh holds there, objects in list.txt's order, from the tar.gz or its extracted folder; bad files are one
sentence."""
import io
import tarfile

import numpy as np
import pytest
import scipy.io
import torch

from betavae.errors import DataError
from betavae.sources import cars3d

NAMES = ("car_b_mesh", "car_a_mesh")


def mesh_bytes(k: int) -> bytes:
    mesh = np.zeros((128, 128, 3, 24, 4), dtype=np.uint8)
    mesh[:, :, 0] = (np.arange(24)[:, None] * 4 + np.arange(4)[None, :]) + 100 * k   # red = view + 100 · object
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"im": mesh})
    return buffer.getvalue()


@pytest.fixture
def two_objects(monkeypatch):
    monkeypatch.setattr(cars3d, "FACTORS", (("elevation", 4), ("azimuth", 24), ("object", 2)))


def write_archive(path, listed=NAMES):
    with tarfile.open(path, "w:gz") as archive:
        files = {"list.txt": "\n".join(listed).encode(), **{f"{n}.mat": mesh_bytes(k) for k, n in enumerate(NAMES)}}
        for name, payload in files.items():
            info = tarfile.TarInfo(f"data/cars/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))


@pytest.mark.parametrize("extracted", [False, True])
def test_each_image_is_the_view_its_mesh_holds_in_list_order(tmp_path, two_objects, extracted):
    if extracted:
        (tmp_path / "cars").mkdir()
        (tmp_path / "cars" / "list.txt").write_text("\n".join(NAMES))
        for k, name in enumerate(NAMES):
            (tmp_path / "cars" / f"{name}.mat").write_bytes(mesh_bytes(k))
    else:
        write_archive(tmp_path / cars3d.ARCHIVE)
    data = cars3d.Cars3D(str(tmp_path))
    for elevation, azimuth, obj in [(0, 0, 0), (3, 5, 1), (2, 23, 0)]:
        image = data.images(torch.tensor([[0, elevation, azimuth, obj]]))[0]
        assert image[0].mean().item() * 255 == pytest.approx(azimuth * 4 + elevation + 100 * obj, abs=0.01)
        assert image[1:].max() == 0
    assert (tmp_path / cars3d.CACHE).is_file() and len(data) == 192


def test_bad_archives_are_one_sentence(tmp_path, two_objects):
    with pytest.raises(DataError, match="scottreed.info"):
        cars3d.Cars3D(str(tmp_path))
    write_archive(tmp_path / cars3d.ARCHIVE, listed=NAMES[:1])
    with pytest.raises(DataError, match="names 1 objects"):
        cars3d.Cars3D(str(tmp_path))
    (tmp_path / cars3d.ARCHIVE).write_bytes(b"not a tar")
    with pytest.raises(DataError, match="not a readable tar.gz"):
        cars3d.Cars3D(str(tmp_path))
