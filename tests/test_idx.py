"""MNIST and Fashion-MNIST from their IDX files (betavae/sources/idx.py): the pixels land where the file has them,
resized to 64 × 64; a missing, truncated or foreign file is one sentence naming what to do."""
import gzip

import numpy as np
import pytest
import torch

from betavae.errors import DataError
from betavae.sources import idx


def write_idx(path, images, magic=0x803, gzipped=False):
    body = np.array([magic, *images.shape], dtype=">u4").tobytes() + images.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(body) if gzipped else body)


@pytest.mark.parametrize("gzipped", [False, True])
def test_the_images_are_read_in_order_and_resized_to_64(tmp_path, gzipped):
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    images[1, :14] = 255                                     # image 1: top half white
    write_idx(tmp_path / (idx.IMAGES + (".gz" if gzipped else "")), images, gzipped=gzipped)
    data = idx.IdxImages("mnist", str(tmp_path))
    batch, factors = data.batch(torch.tensor([0, 1]))
    assert factors is None and batch.shape == (2, 1, 64, 64) and len(data) == 3
    assert batch[0].max() == 0 and batch[1, 0, :28].min() == 1 and batch[1, 0, 36:].max() == 0


def test_bad_files_are_one_sentence(tmp_path):
    with pytest.raises(DataError, match="python data.py download fashion_mnist"):
        idx.IdxImages("fashion_mnist", str(tmp_path))
    write_idx(tmp_path / idx.IMAGES, np.zeros((3, 28, 28)), magic=0x801)
    with pytest.raises(DataError, match="not an IDX file of uint8 images"):
        idx.IdxImages("mnist", str(tmp_path))
    write_idx(tmp_path / idx.IMAGES, np.zeros((3, 28, 28)))
    (tmp_path / idx.IMAGES).write_bytes((tmp_path / idx.IMAGES).read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        idx.IdxImages("mnist", str(tmp_path))
