"""Bad or unusual input gets one sentence and exit 2, before anything is written; the CLI's forms and listings."""
import dataclasses
import math
import os

import pytest
import torch

import main
import params as params_module
import traverse
from betavae.checkpoints import save_checkpoint
from models import VAE
from params import Params, UserError, build_params, load_yaml


@pytest.mark.parametrize("text, value", [("1e-4", 1e-4), ("5e-4", 5e-4), ("1e6", 1e6), ("-2.5e-3", -2.5e-3),
                                         ("1.5E+2", 150.0)])
def test_exponent_floats_are_floats_on_the_command_line_and_in_yaml(tmp_path, text, value):
    key, raw = params_module.parse_assignment(f"lr={text}")
    assert params_module.apply_overrides(Params(), {key: raw}, "--set").lr == value  # negative: before validation
    config = tmp_path / "c.yaml"
    config.write_text(f"lr: {text}\n")
    assert params_module.apply_overrides(Params(), load_yaml(str(config)), "c").lr == value
    if value > 0:
        assert build_params(config=str(config)).lr == value and build_params(assignments=[f"lr={text}"]).lr == value


def test_exponent_text_stays_a_string_for_string_fields():
    assert build_params(assignments=["run_name=1e5"]).run_name == "1e5"
    with pytest.raises(UserError, match="must be int"):
        build_params(assignments=["steps=1e5"])  # an int field does not silently take a float


@pytest.mark.parametrize("assignment, words", [
    ("beta=-1", "weight"), ("beta_start=-0.5", "weight"), ("gamma=-2", "weight"), ("capacity=-1", "weight"),
    ("alpha=-1", "weight"), ("lambda_od=-1", "weight"), ("lambda_d=-1", "weight"),
    ("adam_beta1=1.5", r"\[0, 1\)"), ("adam_beta2=1.0", r"\[0, 1\)"), ("discriminator_beta1=2.0", r"\[0, 1\)"),
    ("discriminator_beta2=-0.1", r"\[0, 1\)"), ("lr=.nan", "finite"), ("beta=.nan", "finite"),
    ("gamma=.inf", "finite"), ("lr=0", "positive")])
def test_out_of_range_params_exit_2_before_a_run_folder_exists(tmp_path, capsys, assignment, words):
    with pytest.raises(UserError, match=words):
        build_params(assignments=[assignment])
    out = tmp_path / "out"
    assert main.main(["--set", f"out_dir={out}", "device=cpu", assignment]) == 2
    message = capsys.readouterr().err
    assert message.startswith("error: ") and "Traceback" not in message and message.count("\n") == 1
    assert not out.exists()


def test_boundary_values_are_accepted():
    p = build_params(assignments=["beta=0", "adam_beta1=0", "adam_beta2=0.999999", "gamma=0"])
    assert p.beta == 0 and p.adam_beta1 == 0 and math.isfinite(p.lr)


def test_config_that_is_a_directory_or_binary_is_one_sentence(tmp_path, capsys):
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    for path, words in [(tmp_path, "is a directory"), (binary, "not UTF-8")]:
        with pytest.raises(UserError, match=words):
            load_yaml(str(path))
        assert main.main(["--config", str(path)]) == 2
        assert capsys.readouterr().err.startswith("error: ")


def test_one_set_takes_several_assignments_and_repeats_still_work():
    args = main.parse_args(["--set", "steps=10", "beta=2", "--set", "lr=1e-3"])
    assert args.assignments == ["steps=10", "beta=2", "lr=1e-3"]
    p = build_params(assignments=args.assignments)
    assert (p.steps, p.beta, p.lr) == (10, 2.0, 1e-3)
    import bench
    assert bench.parse_args(["--set", "amp=false", "compile=false", "--set", "threads=1"]).assignments == \
        ["amp=false", "compile=false", "threads=1"]


def test_help_lists_every_preset_with_its_description(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    descriptions = params_module.PRESET_DESCRIPTIONS
    assert set(descriptions) == set(params_module.PRESETS) and all(descriptions.values())
    assert "CPU" in descriptions["demo"] and "Kim & Mnih" in descriptions["factor_dsprites"]
    for name in params_module.PRESETS:
        assert f"  {name} " in text
    assert "params.py" in text and "--list-params" in text


def test_list_params_prints_every_field_with_default_and_comment(capsys):
    assert main.main(["--list-params"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines()[1:] if line.startswith("  ")]
    assert len(lines) == len(dataclasses.fields(Params))
    by_name = {line.split()[0]: line for line in lines}
    assert set(by_name) == {f.name for f in dataclasses.fields(Params)}
    assert "0.0001" in by_name["lr"] and "Adam learning rate" in by_name["lr"] and "float" in by_name["lr"]
    assert "300000" in by_name["steps"] and "optimiser steps" in by_name["steps"]


def good_state(tmp_path):
    p = Params(data_dir=str(tmp_path), latent_dim=4, device="cpu", traverse_samples=8, traverse_points=2)
    return {"model": VAE(1, 4).state_dict(), "optimizer": {}, "step": 3, "rng": {},
            "params": dataclasses.asdict(p), "channels": 1, "latent_dim": 4}


@pytest.mark.parametrize("change", [
    {"latent_dim": None}, {"channels": None}, {"params": None}, {"step": None},
    {"model": [1, 2]}, {"step": "3"}, {"step": 3.0}, {"params": "betaH"}, {"latent_dim": True}])
def test_doctored_checkpoints_exit_2_in_traverse_and_resume(tmp_path, capsys, change):
    state = good_state(tmp_path)
    for key, value in change.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    run = tmp_path / "run"
    run.mkdir()
    path = run / "checkpoint.pt"
    save_checkpoint(str(path), state)
    key = next(iter(change))
    assert traverse.main([str(path), "--out", str(tmp_path / "pictures")]) == 2
    assert main.main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 2 and str(path) in err and f"'{key}'" in err and "Traceback" not in err
    assert not (tmp_path / "pictures").exists()


@pytest.fixture
def checkpoint_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(0)
    save_checkpoint(str(run / "checkpoint.pt"), good_state(tmp_path))
    return run


def test_traverse_takes_a_run_folder(checkpoint_run, tmp_path):
    out = tmp_path / "pictures"
    assert traverse.main([str(checkpoint_run), "--out", str(out), "--images", "2"]) == 0
    assert (out / "traversal_grid_step000003.png").is_file()


def test_traverse_out_that_is_a_file_or_unwritable_is_one_sentence(checkpoint_run, tmp_path, capsys, monkeypatch):
    existing = tmp_path / "taken.png"
    existing.write_bytes(b"x")
    assert traverse.main([str(checkpoint_run), "--out", str(existing)]) == 2
    assert "existing file" in capsys.readouterr().err and existing.read_bytes() == b"x"

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "makedirs", refuse)
    assert traverse.main([str(checkpoint_run), "--out", str(tmp_path / "locked" / "pictures")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Cannot create the output folder") and "Permission denied" in err


def bomb_png(width=20000, height=20000):
    """A PNG header claiming width × height RGB pixels, with no pixel data: PIL refuses it on open."""
    import struct
    import zlib

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def spoil_celeba(tmp_path):
    from test_celeba import make_tree

    images, _ = make_tree(str(tmp_path))
    (tmp_path / images / "000002.jpg").write_bytes(bomb_png())
    for name in ("000004.jpg", "000007.jpg", "000011.jpg"):
        (tmp_path / images / name).write_bytes(b"not a jpeg")
    return ["000002.jpg", "000004.jpg", "000007.jpg", "000011.jpg"]


@pytest.mark.parametrize("loader", ["cache", "workers"])
def test_every_unreadable_celeba_image_is_named_in_one_error_at_start(tmp_path, loader):
    from PIL import Image

    from data import DataError, make_dataset

    with pytest.raises(Image.DecompressionBombError):
        Image.open(__import__("io").BytesIO(bomb_png()))  # what PIL does with such a header: not an OSError
    bad = spoil_celeba(tmp_path)
    p = Params(dataset="celeba", data_dir=str(tmp_path), celeba_loader=loader, num_workers=2, val_images=0)
    with pytest.raises(DataError) as error:
        make_dataset(p, "cpu")  # workers: found by the header check in the constructor, before any batch
    message = str(error.value)
    assert message.startswith("4 CelebA images are not readable") and "\n" not in message
    assert all(name in message for name in bad) and "decompression bomb" in message.lower()
    assert not list(tmp_path.rglob("*.npy"))  # no cache written from a source with holes


def test_many_unreadable_images_list_the_first_and_write_them_all(tmp_path, monkeypatch):
    from betavae.sources import celeba
    from data import DataError, make_dataset

    bad = spoil_celeba(tmp_path)
    monkeypatch.setattr(celeba, "LISTED", 2)
    p = Params(dataset="celeba", data_dir=str(tmp_path), celeba_loader="workers", num_workers=2)
    with pytest.raises(DataError, match="and 2 more, all listed in") as error:
        make_dataset(p, "cpu")
    listed = str(error.value).split("all listed in ")[1].split(";")[0]
    lines = open(listed).read().splitlines()
    assert sorted(os.path.basename(line.split("\t")[0]) for line in lines) == bad
    assert sum(name in str(error.value) for name in bad) == 2


def local_imports(path):
    import ast

    tree = ast.parse(open(os.path.join(os.path.dirname(os.path.dirname(__file__)), path)).read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
    return names


def test_data_and_celeba_depend_one_way_and_data_error_keeps_its_old_name():
    import data
    from betavae import errors
    from betavae.sources import celeba

    assert "data" not in local_imports("betavae/sources/celeba.py") and "betavae" in local_imports("data.py")
    from betavae.sources.interface import REGISTRY
    assert REGISTRY["celeba"].build.startswith("betavae.sources.celeba:")  # built through the registry, lazily
    assert data.DataError is errors.DataError is celeba.DataError and data.IMAGE_SIZE == celeba.IMAGE_SIZE == 64


def test_a_run_resolves_speed_settings_once_and_asks_the_dataset_for_its_end_pictures(tmp_path, monkeypatch):
    import yaml

    import data
    from betavae.speed import switches as performance

    calls, pictures = [], []
    real = performance.resolve
    monkeypatch.setattr(performance, "resolve", lambda *a, **k: calls.append(a) or real(*a, **k))
    monkeypatch.setattr(data.DSprites, "end_of_run_pictures",
                        lambda self, model, run_dir, p: pictures.append((run_dir, p.steps)) or [])
    args = ["--set", f"out_dir={tmp_path}", f"data_dir={tmp_path}", "run_name=r", "steps=2", "batch_size=8",
            "log_every=1", "sample_every=2", "checkpoint_every=2", "traverse_samples=16", "device=cpu",
            "metrics=false", "factor_samples=0", "compile=false"]
    assert main.main(args) == 0
    assert len(calls) == 1 and pictures == [(str(tmp_path / "r"), 2)]
    record = yaml.safe_load((tmp_path / "r" / "params.yaml").read_text())
    assert record["performance"] == real(Params(compile=False, device="cpu"), "cpu")


def test_dsprites_has_no_end_pictures_and_celeba_writes_its_attribute_correlations(tmp_path):
    import data
    from data import make_dataset
    from test_celeba import make_tree

    assert data.DSprites.end_of_run_pictures(None, None, str(tmp_path), Params()) == []
    make_tree(str(tmp_path))
    p = Params(dataset="celeba", data_dir=str(tmp_path), celeba_loader="workers", num_workers=1, val_images=0)
    faces = make_dataset(p, "cpu")
    written = faces.end_of_run_pictures(VAE(3, 4).eval(), str(tmp_path), p)
    assert [os.path.basename(w) for w in written] == ["attribute_correlation.png"] and os.path.isfile(written[0])
