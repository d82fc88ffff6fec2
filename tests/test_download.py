"""`python data.py download NAME`: a dataset's published files fetched into data_dir with its checksum checked, and a
sentence for a dataset whose files have no published checksum; the registry's checksums are well formed."""
import hashlib
import os

import pytest

import data
from betavae.download import Remote
from betavae.sources import interface
from test_released import Ranges, server  # noqa: F401  (the local HTTP server with Range support)


def test_download_fetches_a_datasets_files_and_says_how_to_train_on_them(server, tmp_path, monkeypatch, capsys):
    served, base = server
    body = os.urandom(4000)
    (served / "3dshapes.h5").write_bytes(body)
    files = (Remote(f"{base}/3dshapes.h5", len(body), "md5:" + hashlib.md5(body).hexdigest(), "test licence"),)
    monkeypatch.setitem(interface.REGISTRY, "shapes3d", interface.Entry(
        "shapes3d", "betavae.sources.shapes3d:make_shapes3d", 3, 480_000, files=files))
    assert data.main(["download", "shapes3d", "--data-dir", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "3dshapes.h5").read_bytes() == body
    out = capsys.readouterr().out
    assert "test licence" in out and "--set dataset=shapes3d data_dir=" in out


def test_a_dataset_without_a_published_checksum_is_one_sentence_naming_where_to_fetch_it(capsys, tmp_path):
    assert data.main(["download", "chairs", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seeing3Dchairs/data/rendered_chairs.tar" in err and "--unchecked" in err
    assert data.main(["download", "celeba", "--data-dir", str(tmp_path)]) == 2
    assert "--unchecked" not in capsys.readouterr().err           # nothing it could fetch


def test_unchecked_fetches_a_file_with_no_published_checksum_and_prints_its_sha256(server, tmp_path, monkeypatch,
                                                                                    capsys):
    served, base = server
    body = os.urandom(3000)
    (served / "The_Scream.jpg").write_bytes(body)
    entry = interface.REGISTRY["scream_dsprites"]
    monkeypatch.setitem(interface.REGISTRY, "scream_dsprites", interface.Entry(
        entry.name, entry.build, 3, entry.images, entry.factors, by_hand="by hand",
        unchecked=(Remote(f"{base}/The_Scream.jpg", 0, "", "public domain", "scream/scream.jpg"),)))
    folder = tmp_path / "d"
    assert data.main(["download", "scream_dsprites", "--data-dir", str(folder)]) == 2
    assert not folder.exists() and "--unchecked" in capsys.readouterr().err
    assert data.main(["download", "scream_dsprites", "--data-dir", str(folder), "--unchecked"]) == 0
    assert (folder / "scream" / "scream.jpg").read_bytes() == body
    assert hashlib.sha256(body).hexdigest() in capsys.readouterr().out
    assert data.main(["download", "scream_dsprites", "--data-dir", str(folder), "--unchecked"]) == 0
    assert "already here" in capsys.readouterr().out


def test_a_missing_file_names_the_download_command(tmp_path):
    from betavae.errors import DataError
    from betavae.sources.shapes3d import read_shapes3d

    with pytest.raises(DataError, match=f"python data.py download shapes3d --data-dir {tmp_path}"):
        read_shapes3d(str(tmp_path))


def test_every_published_file_has_a_checksum_of_its_algorithms_length():
    lengths = {"sha256": 64, "md5": 32}
    for entry in interface.REGISTRY.values():
        assert entry.files or entry.by_hand
        for remote in entry.files:
            algorithm, value = remote.digest
            assert len(value) == lengths[algorithm] and int(value, 16) >= 0 and remote.url.startswith(("https://", "http://"))
