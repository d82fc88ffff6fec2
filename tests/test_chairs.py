"""3D Chairs (betavae/sources/chairs.py): renders read from the extracted folder in name order, grey, the centred
400 × 400 kept; a missing archive is one sentence naming where to fetch it."""
import numpy as np
import pytest
import torch
from PIL import Image

from betavae.errors import DataError
from betavae.sources import chairs


def test_the_centre_400_is_kept_and_renders_come_in_name_order(tmp_path):
    for chair, value in (("b", 200), ("a", 0)):
        renders = tmp_path / "rendered_chairs" / chair / "renders"
        renders.mkdir(parents=True)
        picture = np.full((600, 600, 3), 255, np.uint8)
        picture[100:500, 100:500] = value                    # the chair fills the centred 400 × 400
        Image.fromarray(picture).save(renders / "image_000.png")
    data = chairs.Chairs(str(tmp_path))
    images, factors = data.batch(torch.tensor([0, 1]))
    assert factors is None and images.shape == (2, 1, 64, 64)
    assert images[0].max().item() < 0.02 and images[1].min().item() * 255 == pytest.approx(200, abs=1)  # a, then b


def test_a_missing_archive_names_where_to_fetch_it(tmp_path):
    with pytest.raises(DataError, match="seeing3Dchairs/data/rendered_chairs.tar"):
        chairs.Chairs(str(tmp_path))
