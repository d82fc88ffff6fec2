"""End to end on CPU: a short run writes every output, resumes exactly, and survives Ctrl-C, errors and NaN."""
import csv
import signal

import pytest
import torch
import yaml

import main
import traverse
from betavae.pictures import traversals
from betavae.checkpoints import load_checkpoint
import losses


def run_args(tmp_path, name, steps=12, *extra):
    return ["--set", f"out_dir={tmp_path}", "--set", f"data_dir={tmp_path}", "--set", f"run_name={name}",
            "--set", f"steps={steps}", "--set", "batch_size=16", "--set", "log_every=2", "--set", "sample_every=6",
            "--set", "checkpoint_every=6", "--set", "traverse_samples=40", "--set", "device=cpu",
            "--set", "lr=0.001", "--set", "metrics=false", "--set", "factor_samples=0", *extra]


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_short_run_writes_every_output(tmp_path):
    assert main.main(run_args(tmp_path, "run")) == 0
    run = tmp_path / "run"
    for name in ["params.yaml", "log.csv", "run.log", "checkpoint.pt", "losses.png", "kl_per_dim.png",
                 "reconstructions_step000006.png", "traversal_highest_mean_step000006.png",
                 "traversal_grid_step000006.png", "reconstructions_step000012.png", "traversal_grid_step000012.png"]:
        assert (run / name).is_file(), name
    record = yaml.safe_load((run / "params.yaml").read_text())
    assert record["params"]["steps"] == 12 and "torch" in record["versions"] and record["git_commit"]
    assert "--set" in record["command"]
    rows = read_rows(run / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(2, 13, 2))
    assert {"loss", "recon", "kl", "beta", "kl_0", "kl_9"} <= set(rows[0])
    kl_sum = sum(float(rows[-1][f"kl_{i}"]) for i in range(10))
    assert kl_sum == pytest.approx(float(rows[-1]["kl"]), rel=1e-3)
    state = load_checkpoint(str(run / "checkpoint.pt"))
    assert state["step"] == 12 and {"model", "optimizer", "rng", "params"} <= set(state)


def test_a_second_run_with_the_same_name_gets_its_own_folder(tmp_path):
    assert main.main(run_args(tmp_path, "same", 2)) == 0
    assert main.main(run_args(tmp_path, "same", 2)) == 0
    assert (tmp_path / "same").is_dir() and (tmp_path / "same-2").is_dir()


def test_resume_continues_the_exact_loss_trajectory(tmp_path):
    assert main.main(run_args(tmp_path, "whole", 12)) == 0
    assert main.main(run_args(tmp_path, "split", 6)) == 0
    assert main.main(["--resume", str(tmp_path / "split"), "--set", "steps=12"]) == 0
    whole, split = read_rows(tmp_path / "whole" / "log.csv"), read_rows(tmp_path / "split" / "log.csv")
    assert [r["step"] for r in split] == [r["step"] for r in whole]
    assert [r["loss"] for r in split] == [r["loss"] for r in whole]
    assert [r["kl_3"] for r in split] == [r["kl_3"] for r in whole]


def wrap_objective(monkeypatch, action):
    """Make the betaH objective call `action(step, terms)` so a test can interrupt a run at a chosen step."""
    original = losses.OBJECTIVES["betaH"]

    def wrapped(x, x_logits, mu, logvar, z, step, params):
        terms = original(x, x_logits, mu, logvar, z, step, params)
        return action(step, terms) or terms
    monkeypatch.setitem(losses.OBJECTIVES, "betaH", wrapped)


def test_ctrl_c_saves_a_resumable_checkpoint_and_images(tmp_path, monkeypatch, capsys):
    wrap_objective(monkeypatch, lambda step, terms: signal.raise_signal(signal.SIGINT) if step == 4 else None)
    assert main.main(run_args(tmp_path, "interrupted", 12)) == 130
    assert "--resume" in capsys.readouterr().err
    run = tmp_path / "interrupted"
    assert load_checkpoint(str(run / "checkpoint.pt"))["step"] == 5
    assert (run / "traversal_grid_step000005.png").is_file()
    monkeypatch.undo()
    assert main.main(["--resume", str(run)]) == 0
    assert load_checkpoint(str(run / "checkpoint.pt"))["step"] == 12


def test_non_finite_loss_keeps_the_last_good_state(tmp_path, monkeypatch, capsys):
    def poison(step, terms):
        if step >= 6:
            terms["loss"] = terms["loss"] * float("nan")
    wrap_objective(monkeypatch, poison)
    assert main.main(run_args(tmp_path, "nan", 12)) == 1
    assert "non-finite" in capsys.readouterr().err
    state = load_checkpoint(str(tmp_path / "nan" / "checkpoint.pt"))
    assert state["step"] == 5  # the weights before step 6, whose loss (in the finite row at step 6) was computed
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert (tmp_path / "nan" / "reconstructions_step000005.png").is_file()


def test_an_exception_saves_the_last_good_state(tmp_path, monkeypatch, capsys):
    def fail(step, terms):
        if step == 5:
            raise RuntimeError("simulated failure")
    wrap_objective(monkeypatch, fail)
    assert main.main(run_args(tmp_path, "crash", 12)) == 1
    assert "simulated failure" in capsys.readouterr().err
    assert load_checkpoint(str(tmp_path / "crash" / "checkpoint.pt"))["step"] == 3  # before step 4, its loss seen
    assert "Traceback" in (tmp_path / "crash" / "run.log").read_text()


def test_traverse_rebuilds_the_model_from_the_checkpoint_alone(tmp_path, capsys):
    assert main.main(run_args(tmp_path, "t", 4)) == 0
    out = tmp_path / "redrawn"
    assert traverse.main([str(tmp_path / "t" / "checkpoint.pt"), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"reconstructions_step000004.png", "samples_step000004.png",
                                                "traversal_highest_mean_step000004.png",
                                                "traversal_grid_step000004.png", "heatmaps_step000004.png",
                                                "factor_means_step000004.png"}
    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("hello")
    assert traverse.main([str(not_a_checkpoint)]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err


def test_highest_mean_latent_is_the_largest_absolute_mean():
    mu = torch.tensor([[0.1, -3.0, 1.0], [0.2, -2.0, 1.5]])
    assert traversals.highest_mean_latent(mu) == 1
