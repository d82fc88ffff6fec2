"""Every dataset of the registry (betavae/sources/interface.py) keeps the declared interface, on a fixture the test
builds in that dataset's own file format: images and factors by index, factor names and sizes as registered, the
image of given factor classes is the one the dataset holds at that row, and a short run trains, draws and scores."""
import pytest
import torch
import yaml

import main
from betavae.sources.interface import REGISTRY, Dataset, FactorDataset
from data import make_dataset
from params import Params
from test_celeba import make_tree

# How each dataset's fixture is made in its real format: the folder to give as data_dir. A dataset added to the
# registry without a fixture here fails test_every_registered_dataset_has_a_fixture.
FIXTURES = {
    "dsprites": lambda folder: str(folder),          # no npz: the exact renderer
    "color_dsprites": lambda folder: str(folder),
    "noisy_dsprites": lambda folder: str(folder),
    "celeba": lambda folder: (make_tree(str(folder)), str(folder))[1],   # the torchvision folder layout, JPEGs
}


def test_every_registered_dataset_has_a_fixture():
    assert set(FIXTURES) == set(REGISTRY)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_registered_dataset_keeps_the_interface_and_trains(name, tmp_path):
    entry, data_dir = REGISTRY[name], FIXTURES[name](tmp_path)
    dataset = make_dataset(Params(dataset=name, data_dir=data_dir), "cpu")
    assert isinstance(dataset, Dataset) and dataset.channels == entry.channels
    rows = torch.tensor([0, len(dataset) // 3, len(dataset) - 1])
    images, factors = dataset.batch(rows)
    assert images.shape == (3, entry.channels, 64, 64) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1
    if entry.factors:
        assert isinstance(dataset, FactorDataset) and len(dataset) == entry.images
        assert list(zip(dataset.factor_names, dataset.factor_sizes)) == list(entry.factors)
        classes = dataset.latents_classes[rows]
        assert torch.equal(factors, classes[:, 1:])
        assert torch.equal(dataset.images(classes), images)  # the image at these classes is the one at that row
    else:
        assert factors is None and not isinstance(dataset, FactorDataset)
    args = ["--set", f"dataset={name}", f"data_dir={data_dir}", f"out_dir={tmp_path / 'runs'}", "run_name=r",
            "steps=2", "batch_size=4", "sample_every=2", "traverse_samples=8", "device=cpu", "factor_samples=1",
            "val_images=4", "latent_dim=3", "metrics=mig,unsupervised"]
    assert main.main(args) == 0
    run = tmp_path / "runs" / "r"
    assert (run / "traversal_grid_step000002.png").is_file() and (run / "report.html").is_file()
    scores = yaml.safe_load((run / "metrics.yaml").read_text())[2]
    assert "gaussian_total_correlation" in scores and (("mig" in scores) == bool(entry.factors))
