"""CelebA on a tiny tree made here: layouts and splits, preprocessing, the cache, validation, attributes, errors, a run."""
import csv
import os

import numpy as np
import yaml
import pytest
import torch
from PIL import Image

from betavae.pictures import attributes as attribute_pictures
from betavae.sources import celeba
import main
from betavae.evaluation import validation
from data import DataError, make_dataset
from losses import OBJECTIVES, beta_at
from models import VAE
from params import Params, UserError, build_params

ATTRIBUTE_NAMES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair Blond_Hair "
    "Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones "
    "Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline "
    "Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick "
    "Wearing_Necklace Wearing_Necktie Young").split()
# 20 training, 6 validation and 4 test images, named by their ids in the standard partition.
IDS = {0: list(range(1, 21)), 1: list(range(162771, 162777)), 2: list(range(182638, 182642))}


def write_face(path, seed):
    """A 178 × 218 JPEG (CelebA's aligned size) with smooth random colours, so JPEG keeps it recognisable."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (11, 9, 3), dtype=np.uint8)
    Image.fromarray(coarse).resize((178, 218), Image.BILINEAR).save(path, quality=90)


def make_tree(root, side_files=True, folder=("celeba", "img_align_celeba")):
    """torchvision's CelebA layout under root (or a bare folder without side files); returns the attribute table."""
    images = os.path.join(root, *folder)
    os.makedirs(images)
    rng = np.random.default_rng(0)
    names = [f"{i:06d}.jpg" for split in IDS.values() for i in split]
    attributes = rng.choice(np.array([-1, 1], dtype=np.int8), (len(names), 40))
    for seed, name in enumerate(names):
        write_face(os.path.join(images, name), seed)
    if side_files:
        parent = os.path.dirname(images)
        with open(os.path.join(parent, celeba.PARTITION_FILE), "w") as f:
            f.writelines(f"{i:06d}.jpg {split}\n" for split, ids in IDS.items() for i in ids)
        with open(os.path.join(parent, celeba.ATTRIBUTE_FILE), "w") as f:
            f.write(f"{len(names)}\n" + " ".join(ATTRIBUTE_NAMES) + " \n")
            f.writelines(f"{n} " + " ".join(f"{v:2d}" for v in row) + "\n" for n, row in zip(names, attributes))
    return images, dict(zip(names, attributes))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("celeba_tree")
    images, attributes = make_tree(str(root))
    return str(root), images, attributes


def celeba_params(data_dir, **overrides):
    return Params(dataset="celeba", data_dir=str(data_dir), **overrides)


def test_torchvision_layout_loads_with_the_standard_splits_and_attributes(tree, tmp_path):
    root, images, attributes = tree
    source = celeba.find_celeba(root)
    assert source.folder == images and source.attribute_names == tuple(ATTRIBUTE_NAMES)
    sizes = {split: len(celeba.CelebA(source, split, loader="workers")) for split in celeba.SPLITS}
    assert sizes == {"train": 20, "valid": 6, "test": 4}
    dataset = make_dataset(celeba_params(root, celeba_loader="workers"))
    assert dataset.channels == 3 and not hasattr(dataset, "factor_sizes")
    x, factors = dataset.batch(torch.tensor([0, 19, 5]))
    assert factors is None and x.shape == (3, 3, 64, 64) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.05
    held_out = dataset.held_out()
    assert held_out.paths[0].endswith("162771.jpg") and len(held_out) == 6
    assert held_out.attributes[2].tolist() == attributes["162773.jpg"].tolist()


def test_bare_folder_splits_by_id_ranges_and_any_folder_by_name_hash(tmp_path):
    images, _ = make_tree(str(tmp_path / "bare"), side_files=False, folder=("img_align_celeba",))
    source = celeba.find_celeba(str(tmp_path / "bare"))
    assert source.folder == images and source.attributes is None
    assert np.bincount(source.splits).tolist() == [20, 6, 4]
    other = tmp_path / "faces"
    other.mkdir()
    for seed in range(30):
        write_face(str(other / f"portrait_{seed}.png"), seed)
    source = celeba.find_celeba(str(other))
    held = [n for n, s in zip(source.names, source.splits) if s == celeba.SPLITS["valid"]]
    assert len(source.names) == 30 and 0 < len(held) < 30 and set(source.splits) <= {0, 1}
    assert held == [f"portrait_{i}.png" for i in range(30) if celeba.zlib.crc32(f"portrait_{i}.png".encode()) % 10 == 0]


def test_preprocessing_matches_torchvision_centre_crop_and_resize(tree):
    from torchvision import transforms

    path = os.path.join(tree[1], "000007.jpg")
    expected = transforms.Compose([transforms.CenterCrop(148), transforms.Resize(64), transforms.PILToTensor()])(
        Image.open(path).convert("RGB"))
    assert np.array_equal(celeba.decode_image(path, 148), expected.numpy())
    assert celeba.decode_image(path, 0).shape == (3, 64, 64)  # the largest square: 178 × 178


def test_cache_round_trips_is_reused_and_rebuilt_when_the_source_changes(tmp_path, monkeypatch):
    images, _ = make_tree(str(tmp_path))
    source = celeba.find_celeba(str(tmp_path))
    cache_dir = str(tmp_path / "cache")
    cached = celeba.CelebA(source, "valid", loader="cache", cache_dir=cache_dir)
    decoded = celeba.CelebA(source, "valid", loader="workers")
    every = torch.arange(len(cached))
    assert torch.equal(cached.images(every), decoded.images(every))
    assert torch.equal(cached.batch(every)[0], decoded.batch(every)[0])
    cache_file = os.path.join(cache_dir, "celeba_valid_crop148.npy")
    assert os.path.isfile(cache_file) and os.path.isfile(cache_file + ".json")

    def no_decoding(*_):
        raise AssertionError("a valid cache was decoded again")
    with monkeypatch.context() as patch:
        patch.setattr(celeba, "decode_image", no_decoding)
        assert torch.equal(celeba.CelebA(source, "valid", cache_dir=cache_dir).images(every), cached.images(every))

    changed = os.path.join(images, "162772.jpg")
    write_face(changed, seed=999)
    os.utime(changed, ns=(os.stat(changed).st_atime_ns, os.stat(changed).st_mtime_ns + 10**9))
    rebuilt = celeba.CelebA(celeba.find_celeba(str(tmp_path)), "valid", cache_dir=cache_dir)
    assert np.array_equal(rebuilt.images(torch.tensor([1])).numpy()[0], celeba.decode_image(changed, 148))
    assert not torch.equal(rebuilt.images(torch.tensor([1])), cached.images(torch.tensor([1])))
    assert torch.equal(rebuilt.images(torch.tensor([0, 2])), decoded.images(torch.tensor([0, 2])))
    assert not [n for n in os.listdir(cache_dir) if n.endswith(".part")]


def test_missing_data_is_one_sentence_and_exit_2_without_a_traceback(tmp_path, capsys):
    with pytest.raises(DataError, match=r"No CelebA images .*img_align_celeba.*--set download=true\.$"):
        make_dataset(celeba_params(tmp_path / "nowhere"))
    assert main.main(["--set", "dataset=celeba", "--set", f"data_dir={tmp_path / 'nowhere'}",
                      "--set", f"out_dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No CelebA images") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_a_corrupt_image_names_the_file(tmp_path):
    images, _ = make_tree(str(tmp_path))
    with open(os.path.join(images, "000003.jpg"), "wb") as f:
        f.write(b"not a jpeg")
    with pytest.raises(DataError, match="000003.jpg is not a readable image"):
        make_dataset(celeba_params(tmp_path))


def test_download_failure_explains_the_quota_and_the_manual_route(tmp_path, monkeypatch):
    import torchvision

    def quota_exceeded(*args, **kwargs):
        assert kwargs["download"] is True
        raise RuntimeError("Quota exceeded for this file")
    monkeypatch.setattr(torchvision.datasets, "CelebA", quota_exceeded)
    with pytest.raises(DataError, match=r"Quota exceeded.*quota.*img_align_celeba\.zip.*list_attr_celeba\.txt"):
        make_dataset(celeba_params(tmp_path, download=True))


def test_presets_carry_the_original_projects_settings():
    plain = build_params("betaH_celeba")
    assert (plain.dataset, plain.recon, plain.latent_dim, plain.batch_size, plain.lr, plain.adam_beta1,
            plain.steps, plain.beta) == ("celeba", "gaussian", 32, 64, 5e-4, 0.5, 100_000, 10.0)
    down, up = build_params("betaH_celeba_anneal_down"), build_params("betaH_celeba_anneal_up")
    assert [beta_at(s, down) for s in (0, 20_000, 40_000, 90_000)] == [100.0, 50.0, 0.0, 0.0]
    assert [beta_at(s, up) for s in (0, 20_000, 40_000, 90_000)] == [0.0, 5.0, 10.0, 10.0]
    with pytest.raises(UserError, match="celeba_loader"):
        build_params(assignments=["celeba_loader=threads"])


def test_validation_loss_is_repeatable_and_leaves_the_training_rng_alone(tree):
    params = celeba_params(tree[0], celeba_loader="workers", recon="gaussian", val_images=5)
    dataset = make_dataset(params)
    torch.manual_seed(0)
    model = VAE(3, params.latent_dim)
    state = torch.get_rng_state()
    first = validation.validation_loss(model, OBJECTIVES["betaH"], dataset, 7, params)
    assert torch.equal(torch.get_rng_state(), state)
    assert first == validation.validation_loss(model, OBJECTIVES["betaH"], dataset, 7, params)
    assert first["step"] == 7 and first["val_loss"] == pytest.approx(first["val_recon"] + 4.0 * first["val_kl"], rel=1e-4)
    # Averaged over images, not batches: five images in batches of 2 give the same loss as in one batch of 5.
    in_pieces = validation.validation_loss(model, OBJECTIVES["betaH"], dataset, 7, params, batch_size=2)
    assert in_pieces["val_recon"] == pytest.approx(first["val_recon"], rel=1e-5)


class StubSplit:
    """Images carrying their attributes in the first row, so a stub encoder can read them back."""

    split = "valid"

    def __init__(self, attributes):
        self.attributes = attributes

    def __len__(self):
        return len(self.attributes)

    def batch(self, indices):
        x = torch.zeros(len(indices), 3, 64, 64)
        x[:, 0, 0, :40] = self.attributes[indices].float()
        return x, None


class StubEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        row = x[:, 0, 0]
        mu = torch.stack([row[:, 31] * 3 + 1, -row[:, 20], torch.ones(len(x))], dim=1)  # Smiling, −Male, constant
        return mu, torch.zeros_like(mu)


def test_attribute_correlations_are_exact_for_latents_that_copy_an_attribute():
    model = torch.nn.Module()
    model.encoder = StubEncoder()
    attributes = torch.from_numpy(np.random.default_rng(1).choice(np.array([-1, 1], dtype=np.int8), (50, 40)))
    correlation, variance = attribute_pictures.attribute_correlations(model, StubSplit(attributes), 0, batch_size=16)
    assert correlation.shape == (3, 40) and variance[2] == 0
    assert correlation[0, 31] == pytest.approx(1.0) and correlation[1, 20] == pytest.approx(-1.0)
    assert np.all(correlation[2] == 0) and np.all(np.abs(correlation) <= 1 + 1e-9)


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_short_celeba_run_writes_its_outputs(tree, tmp_path):
    assert main.main(["--set", "dataset=celeba", "--set", f"data_dir={tree[0]}", "--set", f"out_dir={tmp_path}",
                      "--set", "run_name=faces", "--set", "steps=4", "--set", "batch_size=4", "--set", "latent_dim=4",
                      "--set", "recon=gaussian", "--set", "log_every=2", "--set", "sample_every=4",
                      "--set", "eval_every=3", "--set", "traverse_samples=8", "--set", "traverse_points=4",
                      "--set", "device=cpu"]) == 0
    folder = tmp_path / "faces"
    for name in ["log.csv", "val.csv", "validation.png", "losses.png", "attribute_correlation.png",
                 "reconstructions_step000004.png", "traversal_grid_step000004.png", "checkpoint.pt"]:
        assert (folder / name).is_file(), name
    rows = read_rows(folder / "val.csv")
    assert [r["step"] for r in rows] == ["3", "4"] and float(rows[-1]["val_loss"]) > 0  # every 3 steps, and the end
    with open(folder / "attribute_correlation.csv") as f:
        header, *latents = list(csv.reader(f))
    assert header[2:] == ATTRIBUTE_NAMES and len(latents) == 4 and all(len(r) == 42 for r in latents)
    assert all(-1 <= float(v) <= 1 for r in latents for v in r[2:])
    scores = yaml.safe_load((folder / "metrics.yaml").read_text())  # no factors: the unsupervised scores
    assert sorted(scores) == [3, 4] and scores[4]["mutual_info_score"] >= 0 and "mig" not in scores[4]
    assert "needs ground-truth factors" in (folder / "run.log").read_text()
