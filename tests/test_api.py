"""The scoring API (betavae/api.py, docs/api.md): the documented examples run, from a folder outside the clone, with
only the package on the path (as `pip install` leaves it); packaging installs nothing but `betavae`; any callable is
scored as a run's model is."""
import dataclasses
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from betavae import api
from betavae.checkpoints import save_checkpoint
from betavae.errors import UserError
from models import VAE
from params import Params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def doc_block(marker: str) -> str:
    text = open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8").read()
    return re.search(rf"<!-- {marker} -->\n```python\n(.*?)```", text, re.S).group(1)


def installed_copy(tmp_path) -> tuple[str, dict]:
    """The package alone in a site folder (what a wheel holds) and an environment whose path is that folder only."""
    site = tmp_path / "site"
    shutil.copytree(os.path.join(ROOT, "betavae"), site / "betavae", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(site), "MPLBACKEND": "Agg"}
    return str(site), env


def run_outside(tmp_path, code: str, env: dict) -> str:
    work = tmp_path / "elsewhere"
    work.mkdir(exist_ok=True)
    check = "\nimport sys\nassert not {'params', 'models', 'data', 'losses'} & set(sys.modules), 'a root module'\n"
    done = subprocess.run([sys.executable, "-c", code + check], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_documented_scoring_example_runs_from_another_folder_with_only_the_package(tmp_path):
    _, env = installed_copy(tmp_path)
    out = run_outside(tmp_path, doc_block("api example"), env)
    assert re.fullmatch(r"MIG \d\.\d{3}, SAP \d\.\d{3}\n", out)
    written = yaml.safe_load(open(tmp_path / "elsewhere" / "my_scores" / "metrics.yaml"))
    assert set(written) == {0} and {"mig", "sap", "protocol", "samples", "seconds"} <= set(written[0])


def test_the_documented_checkpoint_example_runs_on_a_checkpoint_of_main(tmp_path):
    _, env = installed_copy(tmp_path)
    run = tmp_path / "elsewhere" / "predictions" / "demo_dsprites"
    run.mkdir(parents=True)
    model = VAE(1, 6)
    save_checkpoint(str(run / "checkpoint.pt"), {"model": model.state_dict(), "params": {"latent_dim": 6},
                                                 "latent_dim": 6, "channels": 1, "step": 3})
    out = run_outside(tmp_path, doc_block("api checkpoint example"), env).splitlines()
    assert out[0] == "torch.Size([8, 6]) torch.Size([8, 1, 64, 64])"
    assert 0.0 <= float(out[1]) <= 1.0


def test_packaging_installs_the_package_only_with_the_requirements_of_the_clone():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["betavae", "betavae.*"]
    assert "py-modules" not in project["tool"]["setuptools"]
    required = [line.split("#")[0].strip() for line in open(os.path.join(ROOT, "requirements.txt"))]
    assert project["project"]["dependencies"] == [r for r in required if r and not r.startswith("pytest")]


def test_nothing_the_api_imports_imports_a_root_module():
    """The API's layer (everything betavae.api reaches, late imports included) stands on the package alone; training,
    sweeps and pictures sit above params.py and losses.py and run from the clone."""
    from tests.test_structure import ROOT_FILES, graph

    edges, reached, todo = graph(), set(), ["betavae.api"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo += [target for target in edges.get(module, ()) if "." not in target or target.startswith("betavae")]
    assert {"betavae.released", "betavae.evaluation.metrics", "betavae.sources.interface"} <= reached
    assert not reached & ROOT_FILES, sorted(reached & ROOT_FILES)


def test_the_data_options_default_as_params_does():
    defaults = {field.name: field.default for field in dataclasses.fields(Params)}
    assert {name: defaults[name] for name in api.DATA_OPTIONS} == api.DATA_OPTIONS


def codes_of(images: torch.Tensor) -> np.ndarray:
    """A representation that knows position: the centre of mass of the sprite, and a constant."""
    weights = images[:, 0] / images[:, 0].sum((1, 2), keepdim=True).clamp_min(1)
    grid = torch.linspace(0, 1, 64)
    return torch.stack([(weights.sum(1) * grid).sum(1), (weights.sum(2) * grid).sum(1),
                        torch.zeros(len(images))], 1).numpy()


def test_a_callable_that_knows_position_scores_higher_than_one_that_does_not(tmp_path):
    knows = api.score(codes_of, "dsprites", metrics="mig", progress=False)
    blind = api.score(lambda images: torch.randn(len(images), 3), "dsprites", metrics="mig", progress=False)
    assert knows["mig"] > 0.1 > blind["mig"] and knows["representation"] == "mean"


def test_a_posterior_callable_gets_the_posterior_metrics_and_a_codes_only_one_is_told(tmp_path):
    def posterior(images):
        mu = torch.as_tensor(codes_of(images))
        return mu, torch.full_like(mu, -4.0)

    both = api.score(posterior, "dsprites", metrics="mig,aam_mmig", kind="both", progress=False, out=str(tmp_path))
    assert {"aam", "mmig", "sampled_mig"} <= set(both)
    codes_only = api.score(codes_of, "dsprites", metrics="mig,aam_mmig", progress=False)
    assert "aam" not in codes_only and "posterior" in codes_only["skipped"]["aam_mmig"]
    with pytest.raises(UserError, match="returns codes only"):
        api.score(codes_of, "dsprites", metrics="mig", kind="sampled", progress=False)
    written = yaml.safe_load(open(tmp_path / "metrics.yaml"))[0]
    assert written["aam"] == both["aam"] and written["samples"] == both["samples"]


def test_bad_arguments_are_one_sentence():
    with pytest.raises(UserError, match="kind 'median'"):
        api.score(codes_of, kind="median")
    with pytest.raises(UserError, match="Unknown data option"):
        api.open_dataset("dsprites", data_folder="x")
    with pytest.raises(UserError, match="supported layouts|neither"):
        api.load_model(os.path.join(ROOT, "docs"))
