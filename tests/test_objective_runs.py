"""Short CPU runs of every objective through main.py, and an exact resume of FactorVAE with its discriminator."""
import csv

import pytest
import torch

import main
from losses import schedule_value
from betavae.checkpoints import load_checkpoint

TERMS = {"vae": {"recon", "kl", "beta"}, "betaH": {"beta", "beta_norm"}, "betaB": {"gamma", "capacity"},
         "factor": {"tc", "gamma", "discriminator_loss"}, "btcvae": {"mi", "tc", "dim_kl", "alpha", "beta", "gamma"},
         "dipI": {"dip_off_diagonal", "dip_diagonal"}, "dipII": {"dip_off_diagonal", "dip_diagonal"}}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny batches run faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_args(tmp_path, name, steps, *extra):
    return ["--set", f"out_dir={tmp_path}", "--set", f"data_dir={tmp_path}", "--set", f"run_name={name}",
            "--set", f"steps={steps}", "--set", "batch_size=8", "--set", "log_every=1", "--set", "sample_every=1000",
            "--set", "checkpoint_every=1000", "--set", "traverse_samples=16", "--set", "traverse_points=3",
            "--set", "device=cpu", "--set", "metrics=false", "--set", "factor_samples=0", *extra]


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", sorted(TERMS))
def test_each_preset_trains_and_logs_every_term_it_optimises(tmp_path, name):
    assert main.main(["--preset", f"{name}_dsprites", *run_args(tmp_path, name, 2)]) == 0
    rows = read_rows(tmp_path / name / "log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert TERMS[name] | {"loss", "recon", "kl", "kl_9"} <= set(rows[0])
    assert all(float(value) == float(value) for row in rows for value in row.values())   # no NaN


def test_factor_resume_restores_both_optimisers_and_the_schedule_exactly(tmp_path):
    schedule = ["--set", "objective=factor", "--set", "gamma=30", "--set", "gamma_start=0", "--set", "gamma_steps=4",
                "--set", "gamma_schedule=cyclical", "--set", "schedule_cycles=2", "--set", "lr=0.001"]
    assert main.main(run_args(tmp_path, "whole", 4, *schedule)) == 0
    assert main.main(run_args(tmp_path, "split", 2, *schedule)) == 0
    middle = load_checkpoint(str(tmp_path / "split" / "checkpoint.pt"))
    assert middle["objective"]["optimizer"]["state"][0]["step"].item() == 2
    assert main.main(["--resume", str(tmp_path / "split"), "--set", "steps=4"]) == 0

    whole, split = read_rows(tmp_path / "whole" / "log.csv"), read_rows(tmp_path / "split" / "log.csv")
    for column in ("step", "loss", "tc", "discriminator_loss", "gamma", "kl_3"):
        assert [r[column] for r in split] == [r[column] for r in whole], column
    # γ at each logged row averages the steps since the previous one (log_every = 1: the step before it).
    assert [float(r["gamma"]) for r in whole] == pytest.approx(
        [schedule_value("cyclical", s, 0.0, 30.0, 4, cycles=2) for s in range(4)])

    ends = [load_checkpoint(str(tmp_path / run / "checkpoint.pt")) for run in ("whole", "split")]
    for a, b in [(ends[0]["model"], ends[1]["model"]),
                 (ends[0]["objective"]["discriminator"], ends[1]["objective"]["discriminator"])]:
        assert all(torch.equal(a[key], b[key]) for key in a)
    for optimiser in ("optimizer", "discriminator"):
        first = ends[0][optimiser] if optimiser == "optimizer" else ends[0]["objective"]["optimizer"]
        second = ends[1][optimiser] if optimiser == "optimizer" else ends[1]["objective"]["optimizer"]
        assert first["param_groups"] == second["param_groups"]
        for index, state in first["state"].items():
            assert all(torch.equal(state[k], second["state"][index][k]) for k in state)
    assert ends[1]["objective"]["optimizer"]["state"][0]["step"].item() == 4
    assert ends[1]["objective"]["optimizer"]["param_groups"][0]["betas"] == (0.5, 0.9)
