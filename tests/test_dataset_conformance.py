"""Every dataset of the registry (betavae/sources/interface.py) keeps the declared interface, on a fixture the test
builds in that dataset's own file format: images and factors by index, factor names and sizes as registered, the
image of given factor classes is the one the dataset holds at that row, and a short run trains, draws and scores."""
import numpy as np
import pytest
import torch
import yaml

import main
from betavae.sources.interface import REGISTRY, Dataset, FactorDataset
from data import make_dataset
from params import Params
from test_celeba import make_tree

TINY_SHAPES = (("floor_hue", 2), ("wall_hue", 2), ("object_hue", 2), ("scale", 2), ("shape", 2), ("orientation", 3))


def marked_images(count: int, channels: int = 3) -> np.ndarray:
    """uint8 [count, 64, 64, channels] whose first pixels spell their row, so a wrong order shows."""
    images = np.random.default_rng(0).integers(0, 255, size=(count, 64, 64, channels), dtype=np.uint8)
    images[:, 0, 0, 0], images[:, 0, 1, 0] = np.arange(count) % 256, np.arange(count) // 256
    return images


def shapes3d_file(folder, monkeypatch) -> str:
    """DeepMind's 3dshapes.h5 layout (datasets `images` uint8 [N, 64, 64, 3], `labels` float64 [N, 6]) at 2–3
    values per factor; the reader is told these sizes."""
    import h5py

    from betavae.sources import shapes3d

    monkeypatch.setattr(shapes3d, "FACTORS", TINY_SHAPES)
    sizes = [size for _, size in TINY_SHAPES]
    grid = np.stack([g.ravel() for g in np.indices(sizes)], axis=1)
    with h5py.File(folder / "3dshapes.h5", "w") as file:
        file["images"] = marked_images(len(grid))
        file["labels"] = grid * 0.1 + 0.05                       # label values, not classes, as in the real file
    return str(folder), TINY_SHAPES


TINY_MPI3D = (2, 2, 1, 1, 2, 3, 2)


def mpi3d_file(name):
    """An MPI3D npz as distributed (`images` uint8 [N, 64, 64, 3], mixed-radix order) at a tiny size the reader is
    told is a release."""
    def make(folder, monkeypatch):
        from betavae.sources import mpi3d

        count = int(np.prod(TINY_MPI3D))
        monkeypatch.setattr(mpi3d, "RELEASES", {count: TINY_MPI3D})
        np.savez(folder / mpi3d.FILES[name][-1], images=marked_images(count))
        return str(folder), tuple(zip(mpi3d.NAMES, TINY_MPI3D))
    return make


def idx_file(name, gzipped):
    """torchvision's layout, data_dir/<MNIST|FashionMNIST>/raw/train-images-idx3-ubyte[.gz]: an IDX header (magic
    0x803, count, 28, 28, big-endian) and the pixels."""
    def make(folder, monkeypatch):
        import gzip

        from betavae.sources import idx

        raw = folder / idx.FOLDERS[name] / "raw"
        raw.mkdir(parents=True)
        pixels = marked_images(12, 1)[:, :28, :28, 0]
        body = np.array([0x803, 12, 28, 28], dtype=">u4").tobytes() + pixels.tobytes()
        path = raw / (idx.IMAGES + (".gz" if gzipped else ""))
        path.write_bytes(gzip.compress(body) if gzipped else body)
        return str(folder), None
    return make


def norb_matrix(array: np.ndarray, gzipped: bool) -> bytes:
    """NYU's binary-matrix format: magic (byte or int32 matrix), rank, max(3, rank) sizes, little-endian data."""
    import gzip

    magic = 0x1E3D4C55 if array.dtype == np.uint8 else 0x1E3D4C54
    sizes = list(array.shape) + [1] * (3 - array.ndim)
    body = np.array([magic, array.ndim, *sizes], dtype="<u4").tobytes() + array.astype(array.dtype.newbyteorder("<")).tobytes()
    return gzip.compress(body) if gzipped else body


def smallnorb_files(folder, monkeypatch):
    """The six files, training gzipped and test plain: 8 + 4 images, two cameras, factors spread over the grid with
    two instances sharing each combination."""
    from betavae.sources import smallnorb

    rng = np.random.default_rng(1)
    for (split, _), count in zip(smallnorb.SPLITS, (8, 4)):
        pixels = np.repeat(marked_images(count, 1)[:, None, :, :, 0], 2, axis=1)
        pixels = np.pad(pixels, ((0, 0), (0, 0), (0, 32), (0, 32)))  # 96 × 96
        category = (np.arange(count) // 2 % 5).astype(np.int32)
        info = np.stack([np.arange(count) % 2, rng.integers(0, 9, count), 2 * rng.integers(0, 18, count),
                         rng.integers(0, 6, count)], axis=1).astype(np.int32)
        for kind, array in (("dat", pixels.astype(np.uint8)), ("cat", category), ("info", info)):
            name = smallnorb.file_name(split, kind) + (".gz" if split == "training" else "")
            (folder / name).write_bytes(norb_matrix(array, gzipped=split == "training"))
    return str(folder), None


def scream_picture(folder, monkeypatch):
    """disentanglement_lib's data layout, scream/scream.jpg: a 400 × 300 picture (shrunk to 350 × 262 when read)."""
    from PIL import Image

    (folder / "scream").mkdir()
    Image.fromarray(marked_images(1)[0].repeat(6, 0).repeat(6, 1)[:300, :400]).save(folder / "scream" / "scream.jpg")
    return str(folder), None


def cars3d_archive(folder, monkeypatch):
    """nips2015-analogy-data.tar.gz as distributed (data/cars/list.txt, data/cars/<name>.mat holding `im` uint8
    [128, 128, 3, 24, 4]) with two objects, listed in the opposite of their alphabetical order."""
    import io
    import tarfile

    import scipy.io

    from betavae.sources import cars3d

    factors = (("elevation", 4), ("azimuth", 24), ("object", 2))
    monkeypatch.setattr(cars3d, "FACTORS", factors)
    with tarfile.open(folder / cars3d.ARCHIVE, "w:gz") as archive:
        def add(name, payload):
            info = tarfile.TarInfo(f"data/cars/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
        add("list.txt", b"car_b_mesh\ncar_a_mesh\n")
        for k, name in enumerate(("car_b_mesh", "car_a_mesh")):
            mesh = np.zeros((128, 128, 3, 24, 4), dtype=np.uint8)
            mesh[0, 0, 0] = (np.arange(24)[:, None] * 4 + np.arange(4)[None, :]) * 2 + k  # view and object marked
            buffer = io.BytesIO()
            scipy.io.savemat(buffer, {"im": mesh})
            add(f"{name}.mat", buffer.getvalue())
    return str(folder), factors


def chairs_archive(folder, monkeypatch):
    """rendered_chairs.tar as distributed: rendered_chairs/<chair>/renders/*.png, 600 × 600 RGB, two chairs."""
    import io
    import tarfile

    from PIL import Image

    with tarfile.open(folder / "rendered_chairs.tar", "w") as archive:
        for chair in ("a", "b"):
            for view in range(3):
                buffer = io.BytesIO()
                Image.fromarray(np.full((600, 600, 3), 40 * view + (chair == "b") * 100, np.uint8)).save(buffer, "PNG")
                info = tarfile.TarInfo(f"rendered_chairs/{chair}/renders/image_{view:03d}.png")
                info.size = len(buffer.getvalue())
                archive.addfile(info, io.BytesIO(buffer.getvalue()))
    return str(folder), None


# How each dataset's fixture is made in its real format: (data_dir, its factors as the reader then sees them, or
# None for the registered ones). A dataset added to the registry without a fixture here fails
# test_every_registered_dataset_has_a_fixture.
FIXTURES = {
    "dsprites": lambda folder, monkeypatch: (str(folder), None),          # no npz: the exact renderer
    "color_dsprites": lambda folder, monkeypatch: (str(folder), None),
    "noisy_dsprites": lambda folder, monkeypatch: (str(folder), None),
    "scream_dsprites": scream_picture,
    "celeba": lambda folder, monkeypatch: (make_tree(str(folder)), str(folder), None)[1:],  # torchvision's layout
    "shapes3d": shapes3d_file,
    **{name: mpi3d_file(name) for name in ("mpi3d_toy", "mpi3d_realistic", "mpi3d_real")},
    "smallnorb": smallnorb_files,
    "cars3d": cars3d_archive,
    "chairs": chairs_archive,
    "mnist": idx_file("mnist", gzipped=False),
    "fashion_mnist": idx_file("fashion_mnist", gzipped=True),
}


FIRST_OF_ITS_CLASS = {}
for _name, _entry in REGISTRY.items():
    FIRST_OF_ITS_CLASS.setdefault(_entry.build, _name)


def test_every_registered_dataset_has_a_fixture():
    assert set(FIXTURES) == set(REGISTRY)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_registered_dataset_keeps_the_interface_and_trains(name, tmp_path, monkeypatch):
    entry = REGISTRY[name]
    data_dir, factors_read = FIXTURES[name](tmp_path, monkeypatch)
    expected = factors_read or entry.factors
    dataset = make_dataset(Params(dataset=name, data_dir=data_dir), "cpu")
    assert isinstance(dataset, Dataset) and dataset.channels == entry.channels
    rows = torch.tensor([0, len(dataset) // 3, len(dataset) - 1])
    images, factors = dataset.batch(rows)
    assert images.shape == (3, entry.channels, 64, 64) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1
    if entry.build.endswith(("make_idx", "make_smallnorb")):
        assert len(dataset) == 12                            # every image of the fixture's files
    if name == "chairs":                                     # the renders in name order, grey
        assert len(dataset) == 6 and dataset.batch(torch.tensor([4]))[0].mean().item() * 255 == pytest.approx(140, abs=1)
    if entry.factors:
        assert isinstance(dataset, FactorDataset)
        assert list(zip(dataset.factor_names, dataset.factor_sizes)) == list(expected)
        classes = dataset.latents_classes[rows]
        assert torch.equal(factors, classes[:, 1:])
        if getattr(dataset, "complete_grid", True):
            assert len(dataset) == (entry.images if factors_read is None else int(np.prod([s for _, s in expected])))
            assert torch.equal(dataset.images(classes), images)  # the image at these classes is the one at that row
    else:
        assert factors is None and not isinstance(dataset, FactorDataset)
    if name != FIRST_OF_ITS_CLASS[entry.build]:
        return  # the short run below trains each dataset class once (the MPI3D variants share one, as the colours)
    args = ["--set", f"dataset={name}", f"data_dir={data_dir}", f"out_dir={tmp_path / 'runs'}", "run_name=r",
            "steps=2", "batch_size=4", "sample_every=2", "traverse_samples=8", "device=cpu", "factor_samples=1",
            "val_images=4", "latent_dim=3", "metrics=mig,unsupervised"]
    assert main.main(args) == 0
    run = tmp_path / "runs" / "r"
    assert (run / "traversal_grid_step000002.png").is_file() and (run / "report.html").is_file()
    scores = yaml.safe_load((run / "metrics.yaml").read_text())[2]
    assert "gaussian_total_correlation" in scores and (("mig" in scores) == bool(entry.factors))
