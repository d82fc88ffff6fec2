"""Packed training equals training alone, writes the same run folders, resumes, and falls back for FactorVAE."""
import dataclasses
import os

import pytest
import torch

import main
from betavae.scale import packed, packing
from data import make_dataset
from betavae.checkpoints import load_checkpoint, model_from_checkpoint
from params import UserError, build_params, validate
import models
from betavae.training import loop, run_folder

STEPS = 50


def base_params(tmp_path, *extra):
    return build_params(None, None, [f"out_dir={tmp_path}", f"data_dir={tmp_path}", f"steps={STEPS}",
                                     "batch_size=8", "log_every=10", "sample_every=1000", "checkpoint_every=1000",
                                     "traverse_samples=20", "device=cpu", "metrics=false", "factor_samples=0",
                                     "amp=false", "channels_last=false", *extra])


def three(params):
    """Three betaH models differing in β and seed (a β grid with seeds)."""
    return [dataclasses.replace(params, beta=beta, seed=seed) for beta, seed in [(1.0, 0), (4.0, 1), (16.0, 2)]]


def folders(tmp_path, name, count):
    paths = [str(tmp_path / f"{name}{k}") for k in range(count)]
    for path in paths:
        os.makedirs(path)
    return paths


def last_row(run_dir):
    with open(os.path.join(run_dir, "log.csv")) as f:
        lines = f.read().splitlines()
    return dict(zip(lines[0].split(","), map(float, lines[-1].split(","))))


def relative_difference(a: dict, b: dict, init: dict) -> float:
    """||a − b|| over all weights, relative to how far training moved a from its initialisation."""
    norm = lambda tensors: sum(t.pow(2).sum() for t in tensors).sqrt()  # noqa: E731
    return (norm(a[n] - b[n] for n in a) / norm(a[n] - init[n] for n in a)).item()


def test_a_pack_of_three_matches_the_three_trained_alone(tmp_path):
    """Tolerance: the weights' difference within 5% of the distance training moved them from their init (L2 over
    all weights), logged losses within 1e-4 relative, after 50 steps at lr 1e-4. Why not exact: the vmapped
    convolutions run as grouped convolutions whose sums are ordered differently from K separate ones; the
    gradients agree to ~2e-6 relative at every step (measured), but Adam divides by √v, so on weights whose
    gradient is near zero (the β = 16 model's collapsing encoder) that rounding can flip the update's sign and
    move it by up to about lr per step. Measured: 1% for β = 16, 5e-7 for β = 1 and 4.
    Everything else is exact: the same initialisation, batches and reparameterisation noise (each packed model
    draws ε from its own copy of the stream torch.randn_like uses alone), so a bug in any of those (a shared
    seed, a shared batch, a swapped β) shows up as an O(1) difference, far outside the tolerance."""
    params_list = three(base_params(tmp_path))
    dataset = make_dataset(params_list[0], "cpu")
    pack = packed.Pack(params_list, dataset.channels, len(dataset), torch.device("cpu"))
    for k, params in enumerate(params_list):
        torch.manual_seed(params.seed)
        solo_init = models.VAE(dataset.channels, params.latent_dim).state_dict()
        assert all(torch.equal(solo_init[name], pack.model_state(k)[name]) for name in solo_init), k
    alone, together = folders(tmp_path, "alone", 3), folders(tmp_path, "together", 3)
    assert [loop.train(p, dataset, d, torch.device("cpu")) for p, d in zip(params_list, alone)] == [0, 0, 0]
    assert packed.train_pack(params_list, dataset, together, torch.device("cpu")) == [0, 0, 0]
    for k in range(3):
        a, b = load_checkpoint(os.path.join(alone[k], "checkpoint.pt")), \
            load_checkpoint(os.path.join(together[k], "checkpoint.pt"))
        assert set(a) == set(b) and a["step"] == b["step"] == STEPS
        torch.manual_seed(params_list[k].seed)
        init = models.VAE(dataset.channels, params_list[k].latent_dim).state_dict()
        assert relative_difference(a["model"], b["model"], init) < 0.05, k
        assert list(a["optimizer"]["state"]) == list(b["optimizer"]["state"])
        assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
        for index, state in a["optimizer"]["state"].items():
            assert state.keys() == b["optimizer"]["state"][index].keys()
            assert state["step"] == b["optimizer"]["state"][index]["step"]
        assert torch.equal(a["rng"]["index"], b["rng"]["index"])  # each model drew its own batch stream
        row_a, row_b = last_row(alone[k]), last_row(together[k])
        assert row_a.keys() == row_b.keys() and row_a["beta"] == row_b["beta"] == params_list[k].beta
        assert row_b["loss"] == pytest.approx(row_a["loss"], rel=1e-4)
        assert sorted(os.listdir(alone[k])) == sorted(os.listdir(together[k]))
    # the models really differ from one another (a pack sharing one seed or one β would not)
    losses = [last_row(d)["loss"] for d in together]
    assert len(set(losses)) == 3


def test_a_pack_resumes_exactly_and_its_models_resume_alone(tmp_path):
    params_list = three(base_params(tmp_path))
    dataset = make_dataset(params_list[0], "cpu")
    whole, split = folders(tmp_path, "whole", 3), folders(tmp_path, "split", 3)
    assert packed.train_pack(params_list, dataset, whole, torch.device("cpu")) == [0, 0, 0]
    half = [dataclasses.replace(p, steps=STEPS // 2) for p in params_list]
    assert packed.train_pack(half, dataset, split, torch.device("cpu")) == [0, 0, 0]
    checkpoints = [load_checkpoint(os.path.join(d, "checkpoint.pt")) for d in split]
    assert packed.train_pack(params_list, dataset, split, torch.device("cpu"), checkpoints) == [0, 0, 0]
    for a, b in zip(whole, split):
        ca, cb = load_checkpoint(os.path.join(a, "checkpoint.pt")), load_checkpoint(os.path.join(b, "checkpoint.pt"))
        assert all(torch.equal(ca["model"][name], cb["model"][name]) for name in ca["model"])
        steps = [int(line.split(",")[0]) for line in open(os.path.join(b, "log.csv")).read().splitlines()[1:]]
        assert steps == [10, 20, 25, 30, 40, 50]          # the half run's last row, then no duplicates
        assert last_row(a) == last_row(b)
        assert isinstance(model_from_checkpoint(cb), models.VAE)  # traverse.py's way in
    run_folder.write_params(whole[0], params_list[0], torch.device("cpu"), [])
    assert main.main(["--resume", whole[0], "--set", f"steps={STEPS + 4}"]) == 0  # a packed model goes on alone
    assert load_checkpoint(os.path.join(whole[0], "checkpoint.pt"))["step"] == STEPS + 4


def test_factor_vae_falls_back_to_one_after_another(tmp_path, capsys):
    params_list = three(base_params(tmp_path, "objective=factor", "steps=2", "log_every=1"))[:2]
    dataset = make_dataset(params_list[0], "cpu")
    run_dirs = folders(tmp_path, "factor", 2)
    assert packed.train_pack(params_list, dataset, run_dirs, torch.device("cpu")) == [0, 0]
    assert "objective 'factor' is not packed" in capsys.readouterr().err
    assert all("objective" in load_checkpoint(os.path.join(d, "checkpoint.pt")) for d in run_dirs)


def test_models_that_cannot_share_a_step_are_refused(tmp_path):
    first = base_params(tmp_path)
    with pytest.raises(UserError, match="latent_dim"):
        packed.train_pack([first, dataclasses.replace(first, latent_dim=6)], None, ["a", "b"], torch.device("cpu"))


@pytest.mark.parametrize("value", [0, -2, "many"])
def test_pack_param_must_be_a_positive_int_or_auto(tmp_path, value):
    with pytest.raises(UserError, match="pack"):
        validate(dataclasses.replace(base_params(tmp_path), pack=value))


def test_auto_pack_measures_and_caches(tmp_path, monkeypatch):
    params = base_params(tmp_path, "pack=auto")
    dataset = make_dataset(params, "cpu")
    monkeypatch.setattr(packing, "AUTO_CANDIDATES", {"cpu": (1, 2)})
    monkeypatch.setattr(packing, "_AUTO_CACHE", {})
    chosen = packing.resolve_pack(params, dataset, torch.device("cpu"))
    assert chosen in (1, 2) and list(packing._AUTO_CACHE.values()) == [chosen]
    monkeypatch.setattr(packing, "measure", lambda *_: pytest.fail("measured twice"))
    assert packing.resolve_pack(params, dataset, torch.device("cpu")) == chosen
    assert packing.resolve_pack(dataclasses.replace(params, pack=3), dataset, torch.device("cpu")) == 3


def test_auto_pack_does_not_measure_a_short_sweep(tmp_path, monkeypatch):
    params = base_params(tmp_path, "pack=auto")
    monkeypatch.setattr(packing, "_AUTO_CACHE", {})
    monkeypatch.setattr(packing, "measure", lambda *_: pytest.fail("measured a sweep too short to repay it"))
    dataset = make_dataset(params, "cpu")
    assert packing.resolve_pack(params, dataset, torch.device("cpu"), packing.MEASURE_FROM - 1) == 1
    with pytest.raises(BaseException, match="too short"):
        packing.resolve_pack(params, dataset, torch.device("cpu"), packing.MEASURE_FROM)


def test_bench_pack_times_each_pack_size_against_one_after_another(tmp_path, capsys):
    import bench
    import yaml

    out = tmp_path / "pack.yaml"
    assert bench.main_bench(["--device", "cpu", "--pack", "1,2", "--batch-size", "4", "--steps", "1", "--windows",
                             "1", "--warmup", "1", "--images", "16", "--out", str(out)]) == 0
    record = yaml.safe_load(out.read_text())
    assert set(record["pack"]) == {1, 2} and record["pack_batch_size"] == 4
    for result in record["pack"].values():
        assert result["packed"] > 0 and result["one_after_another"] > 0
        assert result["ratio"] == pytest.approx(result["packed"] / result["one_after_another"], abs=0.01)
    assert "| 2 |" in capsys.readouterr().out
    assert bench.main_bench(["--device", "cpu", "--pack", "0,2", "--images", "16", "--out", str(out)]) == 2
