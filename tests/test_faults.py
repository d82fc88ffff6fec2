"""Faults that used to lose work: signals, NaN, failed writes, incompatible resumes, races, bad output paths."""
import concurrent.futures
import errno
import fcntl
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from betavae.sources import celeba
import main
from losses import make_objective
from betavae.checkpoints import load_checkpoint, model_from_checkpoint
from params import Params, UserError, apply_overrides, parse_assignment
from test_main import read_rows, run_args, wrap_objective
from betavae import checkpoints
from betavae.training import lifecycle, run_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AS_ROOT = os.geteuid() == 0  # root writes through chmod 0o555, so those tests only run as a normal user


def test_sigterm_stops_saves_and_resumes(tmp_path):
    args = run_args(tmp_path, "term", 100000, "--set", "log_every=1", "--set", "checkpoint_every=100000",
                    "--set", "sample_every=100000")
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    process = subprocess.Popen([sys.executable, "main.py", *args], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "term" / "log.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and len(log.read_text().splitlines()) >= 3):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and f"--resume {tmp_path / 'term'}" in err
    step = load_checkpoint(str(tmp_path / "term" / "checkpoint.pt"))["step"]
    assert step == int(read_rows(log)[-1]["step"]) >= 2  # nothing trained after the last row is lost
    assert (tmp_path / "term" / f"traversal_grid_step{step:06d}.png").is_file()
    assert main.main(["--resume", str(tmp_path / "term"), "--set", f"steps={step + 2}"]) == 0
    assert [int(r["step"]) for r in read_rows(log)] == list(range(1, step + 3))


def test_sighup_goes_through_the_same_stop_and_save(tmp_path, monkeypatch, capsys):
    wrap_objective(monkeypatch, lambda step, terms: signal.raise_signal(signal.SIGHUP) if step == 2 else None)
    assert main.main(run_args(tmp_path, "hup", 12)) == 128 + signal.SIGHUP
    assert "stopped by SIGHUP at step 3" in capsys.readouterr().err
    assert load_checkpoint(str(tmp_path / "hup" / "checkpoint.pt"))["step"] == 3


def test_a_second_ctrl_c_during_the_save_stops_at_once(tmp_path, monkeypatch, capsys):
    wrap_objective(monkeypatch, lambda step, terms: signal.raise_signal(signal.SIGINT) if step == 4 else None)
    original = lifecycle.save_checkpoint
    monkeypatch.setattr(lifecycle, "save_checkpoint", lambda *a: (signal.raise_signal(signal.SIGINT), original(*a)))
    assert main.main(run_args(tmp_path, "twice", 12)) == 130
    err = capsys.readouterr().err
    assert "stopped at once by a second Ctrl-C" in err and "training failed" not in err
    assert not (tmp_path / "twice" / "checkpoint.pt").exists() and not list((tmp_path / "twice").glob("*.tmp"))


def test_stale_temporary_files_are_removed_at_the_next_start(tmp_path):
    assert main.main(run_args(tmp_path, "stale", 2)) == 0
    stale = tmp_path / "stale" / "tmpab12cd.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert main.main(["--resume", str(tmp_path / "stale"), "--set", "steps=4"]) == 0
    assert not stale.exists() and load_checkpoint(str(tmp_path / "stale" / "checkpoint.pt"))["step"] == 4


def test_a_stale_celeba_cache_part_is_removed_before_a_rebuild(tmp_path):
    folder = tmp_path / "celeba_cache"
    folder.mkdir()
    (folder / "tmpkilled.npy.part").write_bytes(b"\0" * 1000)
    keep = folder / "other.json"
    keep.write_text("{}")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        images = celeba.load_or_build_cache([], 148, str(folder / "images.npy"), "f", pool)
    assert images.shape == (0, 3, 64, 64)
    assert not list(folder.glob("*.npy.part")) and keep.exists()


def test_nan_guard_saves_weights_whose_loss_was_finite(tmp_path, monkeypatch, capsys):
    """The optimiser step of step 5 poisons the weights: row 5 (its loss computed before the step) is finite,
    row 6 is NaN. The saved state must be one whose loss was computed, and it must be finite on resume."""
    original, calls = torch.optim.Adam.step, [0]

    def poisoned_step(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls[0] += 1
        if calls[0] == 5:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("nan"))
        return out
    monkeypatch.setattr(torch.optim.Adam, "step", poisoned_step)
    assert main.main(run_args(tmp_path, "nan", 12, "--set", "log_every=1")) == 1
    err = capsys.readouterr().err
    run = tmp_path / "nan"
    assert [r["step"] for r in read_rows(run / "log.csv")] == ["1", "2", "3", "4", "5"]
    state = load_checkpoint(str(run / "checkpoint.pt"))
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values())
    model, params = model_from_checkpoint(state), apply_overrides(Params(), state["params"], "checkpoint")
    x = torch.rand(8, 1, 64, 64).round()
    x_logits, mu, logvar, z = model(x)
    assert torch.isfinite(make_objective(params, 1000, "cpu")(x, x_logits, mu, logvar, z, 4, params)["loss"])
    # The advice is a command the parser accepts.
    advised = re.search(r"--set (lr=\S+)", err).group(1)
    assert "e-" not in advised
    assert apply_overrides(Params(), dict([parse_assignment(advised)]), "--set").lr == pytest.approx(0.0001)
    monkeypatch.undo()
    assert main.main(["--resume", str(run), "--set", "steps=5", "--set", advised]) == 0
    rows = read_rows(run / "log.csv")
    assert rows[-1]["step"] == "5" and float(rows[-1]["loss"]) == float(rows[-1]["loss"])  # finite, not NaN


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos")])
def test_a_checkpoint_that_cannot_be_written_is_one_sentence(tmp_path, monkeypatch, capsys, failure):
    original, calls = torch.save, [0]

    def failing_save(*args, **kwargs):
        calls[0] += 1
        if calls[0] > 1:  # the periodic checkpoint of step 6 is written; every later write fails
            raise failure
        return original(*args, **kwargs)
    monkeypatch.setattr(checkpoints.torch, "save", failing_save)
    assert main.main(run_args(tmp_path, "full", 12)) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err
    assert "could not be written" in errors[0] and "checkpoint of step 6" in errors[0] and "intact" in errors[0] and "inline_container" not in errors[0]
    assert load_checkpoint(str(tmp_path / "full" / "checkpoint.pt"))["step"] == 6  # the atomic write held
    assert not list((tmp_path / "full").glob("*.tmp"))


def test_the_error_path_survives_a_checkpoint_that_cannot_be_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(checkpoints.torch, "save", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    wrap_objective(monkeypatch, lambda step, terms: (_ for _ in ()).throw(RuntimeError("boom")) if step == 3 else None)
    assert main.main(run_args(tmp_path, "eio", 12)) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "boom" in errors[0] and "I/O error" in errors[0]
    assert "no checkpoint of this run was written" in errors[0] and "Traceback" not in err


def test_an_incompatible_resume_is_refused_before_anything_is_written(tmp_path, capsys):
    assert main.main(run_args(tmp_path, "r", 2)) == 0
    run = tmp_path / "r"
    record = (run / "params.yaml").read_bytes()
    for change, named in [("latent_dim=6", "latent_dim"), ("objective=btcvae", "objective")]:
        assert main.main(["--resume", str(run), "--set", change]) == 2
        assert f"'{named}'" in capsys.readouterr().err
        assert (run / "params.yaml").read_bytes() == record
    state = load_checkpoint(str(run / "checkpoint.pt"))
    state["model"]["encoder.fc.4.weight"] = torch.zeros(3, 256)  # a wrongly shaped weight
    torch.save(state, run / "checkpoint.pt")
    assert main.main(["--resume", str(run), "--set", "steps=4"]) == 2
    assert "do not fit" in capsys.readouterr().err and (run / "params.yaml").read_bytes() == record


def test_run_folders_are_claimed_atomically(tmp_path):
    params = Params(out_dir=str(tmp_path), run_name="same")
    barrier = threading.Barrier(8)

    def claim(_):
        barrier.wait()
        return run_folder.new_run_dir(params, None)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        folders = list(pool.map(claim, range(8)))
    assert len(set(folders)) == 8 and all(os.path.isdir(f) for f in folders)
    for name in ["../escape", str(tmp_path / "abs"), "a/b", ".."]:
        with pytest.raises(UserError, match="plain folder name"):
            run_folder.new_run_dir(Params(out_dir=str(tmp_path), run_name=name), None)
    assert not (tmp_path.parent / "escape").exists()


def test_a_run_folder_being_trained_is_locked(tmp_path, capsys):
    assert main.main(run_args(tmp_path, "locked", 2)) == 0
    run = tmp_path / "locked"
    with open(run / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.seek(0)
        held.truncate()
        held.write("4242\n")
        held.flush()
        record = (run / "params.yaml").read_bytes()
        assert main.main(["--resume", str(run), "--set", "steps=4"]) == 2
        assert "being trained by another process (pid 4242)" in capsys.readouterr().err
        assert (run / "params.yaml").read_bytes() == record
    assert main.main(["--resume", str(run), "--set", "steps=4"]) == 0  # free again once released


def test_out_dir_that_is_a_file_is_one_sentence(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    assert main.main(run_args(tmp_path / "file", "x", 2)) == 2
    assert "Cannot create the run folder" in capsys.readouterr().err


def test_unwritable_output_paths_are_one_sentence_even_as_root(tmp_path, monkeypatch, capsys):
    real_mkdir, real_open = os.mkdir, open
    monkeypatch.setattr(run_folder.os, "mkdir", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    assert main.main(run_args(tmp_path, "ro", 2)) == 2
    assert "Permission denied" in capsys.readouterr().err and not (tmp_path / "ro").exists()
    monkeypatch.setattr(run_folder.os, "mkdir", real_mkdir)
    assert main.main(run_args(tmp_path, "ro", 2)) == 0
    record = (tmp_path / "ro" / "params.yaml").read_bytes()

    def read_only_open(path, mode="r", *args, **kwargs):
        if any(c in mode for c in "wa+") and str(path).startswith(str(tmp_path / "ro")):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, mode, *args, **kwargs)
    monkeypatch.setattr(run_folder, "open", read_only_open, raising=False)  # run_folder's own open: the lock and params.yaml
    assert main.main(["--resume", str(tmp_path / "ro"), "--set", "steps=4"]) == 2
    assert "Cannot write to the run folder" in capsys.readouterr().err
    assert (tmp_path / "ro" / "params.yaml").read_bytes() == record


@pytest.mark.skipif(AS_ROOT, reason="root writes into read-only folders")
def test_read_only_out_dir_and_run_are_one_sentence(tmp_path, capsys):
    assert main.main(run_args(tmp_path, "done", 2)) == 0
    os.chmod(tmp_path / "done", 0o555)
    parent = tmp_path / "readonly"
    parent.mkdir(mode=0o555)
    try:
        assert main.main(run_args(parent, "x", 2)) == 2
        assert "Cannot create the run folder" in capsys.readouterr().err
        assert main.main(["--resume", str(tmp_path / "done"), "--set", "steps=4"]) == 2
        assert "Cannot write to the run folder" in capsys.readouterr().err
    finally:
        os.chmod(tmp_path / "done", 0o755)


def test_a_garbled_log_and_a_checkpoint_path_resume(tmp_path):
    assert main.main(run_args(tmp_path, "g", 6)) == 0
    log = tmp_path / "g" / "log.csv"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:2] + ["\n", "garbage,x\n", "\x00\x00\n"] + lines[2:]))
    assert main.main(["--resume", str(tmp_path / "g"), "--set", "steps=8"]) == 0
    assert [int(r["step"]) for r in read_rows(log)] == [2, 4, 6, 8]
    assert main.main(["--resume", str(tmp_path / "g" / "checkpoint.pt"), "--set", "steps=10"]) == 0  # the file
    assert [int(r["step"]) for r in read_rows(log)] == [2, 4, 6, 8, 10]


def test_files_written_through_mkstemp_honour_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        assert main.main(run_args(tmp_path, "mode", 6)) == 0
    finally:
        os.umask(previous)
    for name in ["checkpoint.pt", "report.html", "params.yaml"]:
        assert (tmp_path / "mode" / name).stat().st_mode & 0o777 == 0o640, name
