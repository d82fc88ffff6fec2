"""The outputs committed under assets/ are what today's code writes: their params load with no retired or missing
switch, their command reproduces them, and their metrics carry today's protocol and every key docs/metrics.md
promises. The test reads the committed files; it does not rerun them."""
import glob
import os
import shlex
from dataclasses import fields

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(ROOT, "assets")
PARAMS_FILES = sorted(glob.glob(os.path.join(ASSETS, "**", "params.yaml"), recursive=True))
METRICS_FILES = sorted(glob.glob(os.path.join(ASSETS, "**", "metrics.yaml"), recursive=True))


def _load(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_the_assets_hold_runs():
    assert PARAMS_FILES and METRICS_FILES and len(PARAMS_FILES) == len(METRICS_FILES)


@pytest.mark.parametrize("path", PARAMS_FILES, ids=lambda p: os.path.relpath(p, ASSETS))
def test_committed_params_are_todays_params(path):
    import main
    from params import Params, build_params

    record = _load(path)
    names = {f.name for f in fields(Params)}
    assert set(record["params"]) - names == set(), "a retired switch"
    assert names - set(record["params"]) == set(), "a switch added since"
    words = shlex.split(record["command"])
    assert words[:2] == ["python", "main.py"] and "--resume" not in words
    args = main.parse_args(words[2:])
    resolved = build_params(args.preset, args.config, args.assignments)
    differ = {name for name, value in record["params"].items() if getattr(resolved, name) != value}
    assert differ <= {"run_name", "out_dir"}      # where it went, not what it trained


@pytest.mark.parametrize("path", METRICS_FILES, ids=lambda p: os.path.relpath(p, ASSETS))
def test_committed_metrics_have_todays_protocol_and_promised_keys(path):
    from betavae.evaluation import protocol
    from betavae.evaluation.metrics import PROTOCOL

    record = _load(path)
    assert record
    for step, scores in record.items():
        assert scores["protocol"] == PROTOCOL
        assert scores["samples"] == protocol.DEFAULTS          # the protocol's counts (conftest shrinks SAMPLES)
        for key in ("representation", "seconds", "sampling", "binned"):
            assert key in scores, key
        assert set(scores["sampling"]) <= set(scores["seconds"])
