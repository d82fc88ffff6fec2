"""One lifecycle for one model and for a pack: every fault ends the same way alone and packed, and the advice each
message gives works when followed (betavae/training/lifecycle.py)."""
import errno
import os
import re
import shlex
import shutil
import signal

import pytest
import torch
import yaml

import losses
import main
import sweep
from betavae.checkpoints import load_checkpoint
from betavae.training import lifecycle
from test_main import read_rows, run_args

KINDS = ["single", "pack"]


def launch(kind: str, tmp_path, steps: int, *extra: str) -> tuple[int, list]:
    """Train one model (main.py) or a pack of two (sweep.py, pack=2); the exit code and the run folders."""
    if kind == "single":
        return main.main(run_args(tmp_path, "run", steps, *extra)), [tmp_path / "run"]
    single = run_args(tmp_path, "unused", steps, *extra)      # the same settings as the single run, then pack=2
    settings = [value for flag, value in zip(single[::2], single[1::2]) if not value.startswith("run_name=")]
    code = sweep.main_(["--name", "s", "--grid", "seed=0,1", "--set", *settings, "pack=2"])
    return code, [tmp_path / "s" / "seed=0", tmp_path / "s" / "seed=1"]


def once_at(monkeypatch, step: int, action) -> None:
    """Call `action()` the first time the objective runs at `step` (a pack calls it once per model)."""
    original, done = losses.OBJECTIVES["betaH"], []

    def wrapped(x, x_logits, mu, logvar, z, at, params):
        if at == step and not done:
            done.append(at)
            action()
        return original(x, x_logits, mu, logvar, z, at, params)
    monkeypatch.setitem(losses.OBJECTIVES, "betaH", wrapped)


def advice(run) -> list[str]:
    """The command the run's last error or stop line advises, as main.py's argv."""
    line = [entry for entry in (run / "run.log").read_text().splitlines() if "python main.py --resume" in entry][-1]
    command = shlex.split(line[line.index("python main.py"):])
    assert command[:2] == ["python", "main.py"]
    return command[2:]


@pytest.mark.parametrize("kind", KINDS)
def test_a_blown_up_run_resumed_as_its_message_says_finishes_with_finite_losses(kind, tmp_path, capsys):
    """lr = 3 sends the loss to NaN; the message's own command (a lower lr) resumes it, and the optimiser, the
    checkpoint and params.yaml all carry the advised lr."""
    code, runs = launch(kind, tmp_path, 16, "--set", "lr=3", "--set", "log_every=1")
    assert code == 1
    for run in runs:
        assert "the loss became non-finite" in (run / "run.log").read_text()
        argv = advice(run)
        lr = float(dict(a.split("=", 1) for a in argv if "=" in a)["lr"])
        assert lr <= lifecycle.SAFE_LR
        assert main.main(argv) == 0
        losses_after = [float(r["loss"]) for r in read_rows(run / "log.csv")]
        assert losses_after and all(value == value and abs(value) != float("inf") for value in losses_after)
        state = load_checkpoint(str(run / "checkpoint.pt"))
        assert state["step"] == 16 and state["optimizer"]["param_groups"][0]["lr"] == lr
        assert yaml.safe_load((run / "params.yaml").read_text())["params"]["lr"] == lr


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_stops_saves_and_the_advised_resume_finishes(kind, tmp_path, monkeypatch, capsys):
    once_at(monkeypatch, 2, lambda: signal.raise_signal(signal.SIGTERM))
    code, runs = launch(kind, tmp_path, 6)
    assert code in (128 + signal.SIGTERM, 130)      # main.py: 128 + SIGTERM; sweep.py: 130 for any stop
    monkeypatch.undo()
    for run in runs:
        assert "stopped by SIGTERM at step 3; checkpoint and images saved" in (run / "run.log").read_text()
        assert load_checkpoint(str(run / "checkpoint.pt"))["step"] == 3
        assert list(run.glob("reconstructions_step000003.png"))
        assert main.main(advice(run)) == 0
        assert [int(r["step"]) for r in read_rows(run / "log.csv")] == [2, 3, 4, 6]


@pytest.mark.parametrize("kind", KINDS)
def test_a_second_signal_during_the_save_leaves_at_once(kind, tmp_path, monkeypatch, capsys):
    once_at(monkeypatch, 2, lambda: signal.raise_signal(signal.SIGINT))
    original = lifecycle.save_checkpoint
    monkeypatch.setattr(lifecycle, "save_checkpoint", lambda *a: (signal.raise_signal(signal.SIGINT), original(*a)))
    code, runs = launch(kind, tmp_path, 6)
    assert code == 130
    for run in runs:
        text = (run / "run.log").read_text()
        assert "stopped at once by a second Ctrl-C" in text and "training failed" not in text
        assert not (run / "checkpoint.pt").exists() and not list(run.glob("*.tmp"))


@pytest.mark.parametrize("kind", KINDS)
def test_a_full_disk_is_one_sentence_and_the_checkpoint_on_disk_stays_intact(kind, tmp_path, monkeypatch, capsys):
    real_save = torch.save

    def failing_save(state, path, *args, **kwargs):
        if state.get("step", 0) >= 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(state, path, *args, **kwargs)
    monkeypatch.setattr(torch, "save", failing_save)
    code, runs = launch(kind, tmp_path, 6, "--set", "checkpoint_every=2")
    assert code == 1
    for run in runs:
        errors = [line for line in (run / "run.log").read_text().splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "No space left on device" in errors[0]
        assert "the checkpoint of step 2" in errors[0] and "is intact" in errors[0]
        assert load_checkpoint(str(run / "checkpoint.pt"))["step"] == 2


def test_resume_applies_a_changed_lr_and_adam_betas(tmp_path):
    assert main.main(run_args(tmp_path, "lr", 4)) == 0
    run = tmp_path / "lr"
    assert main.main(["--resume", str(run), "--set", "steps=6", "lr=0.00123", "adam_beta1=0.5", "adam_beta2=0.99"]) == 0
    group = load_checkpoint(str(run / "checkpoint.pt"))["optimizer"]["param_groups"][0]
    assert group["lr"] == 0.00123 and tuple(group["betas"]) == (0.5, 0.99)
    recorded = yaml.safe_load((run / "params.yaml").read_text())["params"]
    assert (recorded["lr"], recorded["adam_beta1"], recorded["adam_beta2"]) == (0.00123, 0.5, 0.99)


def test_a_factor_vae_resume_applies_a_changed_discriminator_lr(tmp_path):
    assert main.main(run_args(tmp_path, "factor", 2, "--set", "objective=factor")) == 0
    run = tmp_path / "factor"
    assert main.main(["--resume", str(run), "--set", "steps=4", "discriminator_lr=0.0123"]) == 0
    state = load_checkpoint(str(run / "checkpoint.pt"))
    assert state["objective"]["optimizer"]["param_groups"][0]["lr"] == 0.0123


def test_a_checkpoint_written_before_the_package_layout_still_resumes(tmp_path, capsys):
    """tests/data/checkpoint_before_refactor.pt: written by commit eb6f3ff (models.save_checkpoint, the state
    main.train saved at step 0), whose params name the speed switches removed since (output_gemm, flush_denormal, fast_bce)."""
    run = tmp_path / "before-refactor"
    run.mkdir()
    shutil.copy(os.path.join(os.path.dirname(__file__), "data", "checkpoint_before_refactor.pt"), run / "checkpoint.pt")
    state = load_checkpoint(str(run / "checkpoint.pt"))
    assert "output_gemm" in state["params"] and "flush_denormal" in state["params"]
    assert main.main(["--resume", str(run), "--set", f"data_dir={tmp_path}", "traverse_samples=20"]) == 0
    resumed = load_checkpoint(str(run / "checkpoint.pt"))
    assert resumed["step"] == 4 and "output_gemm" not in resumed["params"] and "flush_denormal" not in resumed["params"]
    assert [int(r["step"]) for r in read_rows(run / "log.csv")] == [2, 4]
    assert re.search(r"done: 4 steps", capsys.readouterr().err)
