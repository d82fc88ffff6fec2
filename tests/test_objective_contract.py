"""The objective contract (betavae/objectives.py), honoured everywhere: every registered objective trains alone and
in a pack of two, or the pack refuses in one line because its entry says so; a stateful objective that may be packed
is updated and checkpointed per model; the worked example of docs/objectives.md registers and trains as written."""
import dataclasses
import os
import re

import pytest
import torch

import losses
import main
from betavae import objectives
from betavae.checkpoints import load_checkpoint
from betavae.scale import packed
from data import make_dataset
from params import build_params
from test_objective_runs import one_thread  # noqa: F401  (autouse: tiny batches on one thread)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(tmp_path, *extra):
    return build_params(None, None, [f"out_dir={tmp_path}", f"data_dir={tmp_path}", "steps=2", "batch_size=8",
                                     "log_every=1", "sample_every=1000", "checkpoint_every=1000", "traverse_samples=16",
                                     "traverse_points=3", "device=cpu", "metrics=false", "factor_samples=0",
                                     "amp=false", *extra])


def header(run_dir) -> list[str]:
    return open(os.path.join(run_dir, "log.csv")).readline().strip().split(",")


def train_alone_and_in_a_pack(tmp_path, name, capsys) -> list[str]:
    """Train `name` for two steps alone, then two models in a pack; check what the contract promises of each."""
    entry = objectives.REGISTRY[name]
    params = tiny(tmp_path, f"objective={name}")
    built = losses.make_objective(params, 100, torch.device("cpu"))
    assert all(hasattr(built, method) == entry.stateful for method in ("after_step", "state_dict", "load_state_dict"))
    assert main.main(["--set", f"out_dir={tmp_path}", "--set", "run_name=alone", "--config", str(save(tmp_path, params))]) == 0
    assert {"loss", "recon", "kl", "kl_0", f"kl_{params.latent_dim - 1}"} <= set(header(tmp_path / "alone"))
    pair = [dataclasses.replace(params, seed=seed) for seed in (0, 1)]
    run_dirs = [str(tmp_path / f"packed{k}") for k in range(2)]
    for folder in run_dirs:
        os.makedirs(folder)
    capsys.readouterr()
    assert packed.train_pack(pair, make_dataset(params, "cpu"), run_dirs, torch.device("cpu")) == [0, 0]
    notice = capsys.readouterr().err
    if entry.packable:
        assert "not packed" not in notice
    else:
        refusal = [line for line in notice.splitlines() if "not packed" in line]
        assert len(refusal) == 1 and entry.why_not_packed in refusal[0]
    for folder in run_dirs:
        state = load_checkpoint(os.path.join(folder, "checkpoint.pt"))
        assert state["step"] == 2 and ("objective" in state) == entry.stateful
        assert header(folder) == header(tmp_path / "alone")
    return header(tmp_path / "alone")


def save(tmp_path, params) -> str:
    import yaml

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(dataclasses.asdict(params)))
    return path


@pytest.mark.parametrize("name", sorted(objectives.REGISTRY))
def test_every_registered_objective_trains_alone_and_in_a_pack_of_two(tmp_path, name, capsys):
    train_alone_and_in_a_pack(tmp_path, name, capsys)


def test_every_objective_named_by_the_registry_exists_and_params_accepts_it():
    for name, entry in objectives.REGISTRY.items():
        assert callable(getattr(losses, entry.loss)) and (not entry.build or callable(getattr(losses, entry.build)))
        assert losses.OBJECTIVES[name] is getattr(losses, entry.loss)
        tiny("/tmp", f"objective={name}")


class Counter:
    """A stateful objective that may be packed: it counts its own updates and keeps the count in the checkpoint."""

    def __init__(self, params, dataset_size, device):
        self.updates = torch.zeros(())

    def __call__(self, *args):
        return losses.beta_vae(*args)

    def after_step(self):
        self.updates += 1
        return {"updates": self.updates.clone()}

    def state_dict(self):
        return {"updates": self.updates.clone()}

    def load_state_dict(self, state):
        self.updates = state["updates"].clone()


def test_a_stateful_objective_that_may_be_packed_is_updated_checkpointed_and_resumed_per_model(tmp_path, monkeypatch,
                                                                                                capsys):
    monkeypatch.setattr(losses, "build_counter", Counter, raising=False)
    monkeypatch.setitem(objectives.REGISTRY, "counter", objectives.Objective(
        "beta_vae", "a test", build="build_counter", stateful=True))
    assert "updates" in train_alone_and_in_a_pack(tmp_path, "counter", capsys)
    for k in range(2):
        assert load_checkpoint(str(tmp_path / f"packed{k}" / "checkpoint.pt"))["objective"]["updates"].item() == 2
    pair = [dataclasses.replace(tiny(tmp_path, "objective=counter", "steps=3"), seed=seed) for seed in (0, 1)]
    states = [load_checkpoint(str(tmp_path / f"packed{k}" / "checkpoint.pt")) for k in range(2)]
    run_dirs = [str(tmp_path / f"packed{k}") for k in range(2)]
    assert packed.train_pack(pair, make_dataset(pair[0], "cpu"), run_dirs, torch.device("cpu"), states) == [0, 0]
    assert load_checkpoint(str(tmp_path / "packed1" / "checkpoint.pt"))["objective"]["updates"].item() == 3


def test_the_worked_example_of_the_docs_registers_and_trains_as_written(tmp_path, monkeypatch, capsys):
    text = open(os.path.join(ROOT, "docs", "objectives.md"), encoding="utf-8").read()
    function = re.search(r"<!-- objective example: losses.py -->\n```python\n(.*?)```", text, re.S).group(1)
    entry = re.search(r"<!-- objective example: registry -->\n```python\n(.*?)```", text, re.S).group(1)
    namespace = dict(vars(losses))
    exec(function, namespace)
    monkeypatch.setattr(losses, "free_bits_vae", namespace["free_bits_vae"], raising=False)
    name, value = eval("{" + entry + "}", vars(objectives)).popitem()
    monkeypatch.setitem(objectives.REGISTRY, name, value)
    monkeypatch.setitem(losses.OBJECTIVES, name, namespace["free_bits_vae"])
    assert {"free_bits", "beta"} <= set(train_alone_and_in_a_pack(tmp_path, name, capsys))
    x = torch.rand(4, 1, 64, 64)
    terms = namespace["free_bits_vae"](x, torch.zeros_like(x), torch.zeros(4, 5), torch.zeros(4, 5), None, 0,
                                       tiny(tmp_path, "capacity=2", "beta=3"))
    assert terms["loss"].item() == pytest.approx(terms["recon"].item() + 3 * 2.0)  # every latent at its floor
