"""torchrun main.py: two CPU processes (gloo) train one model data-parallel into one ordinary run folder."""
import os
import subprocess
import sys

import pytest
import torch

import main
from betavae.checkpoints import load_checkpoint
from test_main import read_rows

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(tmp_path, name, steps):
    return ["--set", f"out_dir={tmp_path / 'runs'}", f"data_dir={tmp_path}", f"run_name={name}", f"steps={steps}",
            "batch_size=8", "log_every=1", "sample_every=6", "checkpoint_every=6", "traverse_samples=8",
            "device=cpu", "lr=0.001", "metrics=false", "factor_samples=0"]


def torchrun(args, processes=2):
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                           "--standalone", "main.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=240)


def test_two_processes_train_one_model_into_one_ordinary_run_folder(tmp_path):
    done = torchrun(tiny(tmp_path, "ddp", 6))
    assert done.returncode == 0, done.stderr[-3000:]
    assert os.listdir(tmp_path / "runs") == ["ddp"]             # rank 1 made no folder of its own
    run = tmp_path / "runs" / "ddp"
    assert [int(r["step"]) for r in read_rows(run / "log.csv")] == list(range(1, 7))  # each step logged once
    assert (run / "traversal_grid_step000006.png").is_file() and (run / "params.yaml").is_file()

    # The same model alone at the same global batch: identical checkpoint layout, and at step 1 (same initial
    # weights, same 8 images) the same KL, which does not depend on the reparameterisation noise.
    assert main.main(tiny(tmp_path, "alone", 6)) == 0
    parallel, alone = load_checkpoint(str(run / "checkpoint.pt")), load_checkpoint(str(tmp_path / "runs" / "alone" /
                                                                                        "checkpoint.pt"))
    assert parallel["step"] == 6 and set(parallel) == set(alone)
    assert {k: v.shape for k, v in parallel["model"].items()} == {k: v.shape for k, v in alone["model"].items()}
    assert set(parallel["optimizer"]["state"]) == set(alone["optimizer"]["state"])
    first_parallel, first_alone = read_rows(run / "log.csv")[0], read_rows(tmp_path / "runs" / "alone" / "log.csv")[0]
    for name in ["kl", "kl_0", "kl_9"]:
        assert float(first_parallel[name]) == pytest.approx(float(first_alone[name]), rel=1e-4, abs=1e-6), name
    assert float(first_parallel["loss"]) == pytest.approx(float(first_alone["loss"]), rel=1e-3)  # noise differs
    moved = sum((parallel["model"][k] - alone["model"][k]).abs().sum() for k in alone["model"])
    assert moved > 0 and all(torch.isfinite(v).all() for v in parallel["model"].values())

    # One process continues it.
    assert main.main(["--resume", str(run), "--set", "steps=8"]) == 0
    assert [int(r["step"]) for r in read_rows(run / "log.csv")] == list(range(1, 9))
    assert load_checkpoint(str(run / "checkpoint.pt"))["step"] == 8


def test_a_batch_that_does_not_split_over_the_processes_is_one_sentence(tmp_path):
    done = torchrun(tiny(tmp_path, "odd", 2) + ["batch_size=7"])
    assert done.returncode != 0 and "error: batch_size=7 does not split over 2 processes" in done.stderr
    # torchrun prints its own report of the failed workers; the workers themselves print one sentence each.
    assert 'main.py", line' not in done.stderr and not (tmp_path / "runs").exists()
