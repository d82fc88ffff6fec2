"""The command lines speak to a user: preset and sweep descriptions, --list-params by section in words, sweep
--help with point counts, the plan with its time estimate, published figures beside measured ones, readable panels."""
import argparse
import importlib
import math
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml
from PIL import Image

import main
import params as params_module
import sweep
from betavae import listing
from betavae.evaluation.published import SWEEP_FIGURES
from betavae.pictures import sweep_report
from betavae.scale import packing, plan, sweep_spec
from betavae.training import loop
from params import PRESET_DESCRIPTIONS, PRESETS, SWEEP_DESCRIPTIONS, SWEEPS, Params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A full stop followed by a capital starts a second sentence, except after an abbreviation.
SECOND_SENTENCE = re.compile(r"(?<!\bal)(?<!\bFig)(?<!\bEq)\.\s+[A-Z]")


@pytest.mark.parametrize("table, names", [(PRESET_DESCRIPTIONS, PRESETS), (SWEEP_DESCRIPTIONS, SWEEPS)],
                         ids=["presets", "sweeps"])
def test_every_preset_and_sweep_has_one_sentence_of_its_own(table, names):
    assert set(table) == set(names)
    for name, text in table.items():
        assert text[0].isupper() and text.endswith(".") and not text.endswith(".."), name
        assert "…" not in text and "above" not in text and "_CELEBA" not in text, name   # stands alone
        assert not SECOND_SENTENCE.search(text) and len(text) <= 220, name
        assert not re.search(r"\bat \d[\d,]* (steps )?(it|some)|MIG \d", text), name      # no measurement diary
        assert " for " in text or " to " in text, name                                     # what it trains, for what


def test_main_help_lists_each_preset_with_its_description(capsys):
    with pytest.raises(SystemExit):
        main.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())                # unwrapped
    assert "300,000 steps" in text and "published setting" in text
    for name, description in PRESET_DESCRIPTIONS.items():
        assert f"{name} {description}" in text, name


def test_list_params_groups_params_by_section_in_words(capsys):
    assert main.main(["--list-params"]) == 0
    out = capsys.readouterr().out
    titles = [line[:-1] for line in out.splitlines() if line and not line.startswith(" ")]
    assert [t.split(" (")[0] for t in titles] == ["data", "model", "objective", "optimisation", "outputs",
                                                  "performance"]
    section, rows = None, {}
    for line in out.splitlines():
        if line and not line.startswith(" "):
            section = line.split(" (")[0].rstrip(":")
        elif line.strip() and section:
            name = line.split()[0]
            assert name not in rows
            rows[name] = (section, line)
    assert set(rows) == {f.name for f in params_module.fields(Params)}
    assert rows["lr"][0] == "optimisation" and rows["beta"][0] == "objective" and rows["pack"][0] == "performance"
    words = {name: re.split(r"\s{2,}", line.strip()) for name, (_, line) in rows.items()}
    assert words["beta_start"][1:3] == ["float or null", "null"]
    assert words["compile"][1:3] == ["true, false or auto", "auto"]
    assert words["amp"][1:3] == ["bf16, false or auto", "auto"]
    assert words["pack"][1:3] == ["int or auto", "auto"]
    assert words["download"][1:3] == ["true or false", "false"]
    assert words["steps"][1:3] == ["int", "300000"] and words["lr"][1:3] == ["float", "0.0001"]
    from betavae.sources.interface import REGISTRY
    assert words["dataset"][1] == ", ".join(REGISTRY) + " or PATH.npz" and "Adam learning rate" in words["lr"][3]


@pytest.mark.parametrize("script", ["main", "sweep", "traverse", "bench"])
def test_help_texts_state_the_defaults_their_options_have(script, monkeypatch):
    parsers, real = [], argparse.ArgumentParser.parse_args
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args",
                        lambda self, *a, **k: parsers.append(self) or real(self, *a, **k))
    importlib.import_module(script).parse_args(["run"] if script == "traverse" else [])
    for action in parsers[0]._actions:
        if action.default in (None, False, [], argparse.SUPPRESS) or not action.help:
            continue
        shown = " ".join(map(str, action.default)) if isinstance(action.default, list) else str(action.default)
        assert f"default {shown}" in action.help, (script, action.dest)


def expected_points(name: str) -> int:
    """Points of a sweep preset counted from SWEEPS itself: the grid's lists multiply, each zip counts once."""
    spec = SWEEPS[name]
    zips = spec.get("zip") or []
    zips = zips if isinstance(zips, list) else [zips]
    return math.prod(len(v) for v in (spec.get("grid") or {}).values()) * \
        math.prod(len(next(iter(group.values()))) for group in zips)


def test_sweep_help_lists_each_sweep_preset_with_its_point_count():
    result = subprocess.run([sys.executable, "sweep.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert expected_points("poster_table1_dsprites") == 15 and expected_points("beta_tradeoff_dsprites") == 72
    for name in SWEEPS:
        assert len(sweep_spec.preset_points(name)) == expected_points(name)
        assert f"{name} {expected_points(name)} points. {SWEEP_DESCRIPTIONS[name]}" in text, name


def test_the_plan_gives_points_packs_steps_and_an_estimate_from_measured_rates(tmp_path, monkeypatch):
    timed = []
    monkeypatch.setattr(packing, "measure", lambda params, images, device, size, steps=5:
                        timed.append((size, tuple(images.shape))) or 100.0)
    cpu = torch.device("cpu")
    alone = sweep_spec.expand(Params(pack=1, steps=1000, batch_size=8), {"beta": [1.0, 4.0, 16.0]}, [])
    text = plan.describe(alone, str(tmp_path), cpu)
    assert "3 points, 3 to train (1,000 steps each, 3,000 model-steps) as 3 packs of 1 on cpu" in text
    assert "about 30 s of training" in text and "estimate from 5 timed steps" in text and "100.0 model-steps/s" in text
    assert timed == [(1, (256, 1, 64, 64))]                        # one kind of model, timed once
    packed = sweep_spec.expand(Params(pack=2, steps=1000, dataset="celeba"), {"beta": [1.0, 4.0, 16.0]}, [])
    text = plan.describe(packed, str(tmp_path), cpu, ranks=2)
    assert "as 1 pack of 2 and 1 pack of 1" in text and "split over 2 ranks" in text
    assert "about 15 s of training per rank" in text and timed[1:] == [(2, (256, 3, 64, 64)), (1, (256, 3, 64, 64))]
    assert "no time estimate (--no-estimate)" in plan.describe(alone, str(tmp_path), cpu, estimate=False)
    assert len(timed) == 3


def test_sweep_prints_its_plan_before_the_first_point(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(packing, "measure", lambda *a, **k: 50.0)
    monkeypatch.setattr(loop, "train", lambda *a, **k: 0)
    args = ["--name", "s", "--grid", "beta=1,4", "--set", f"out_dir={tmp_path}", "steps=500", "pack=1",
            "device=cpu", "metrics=false"]
    assert sweep.main_(args) == 0
    out = capsys.readouterr().out
    assert out.index("plan: 2 points, 2 to train (500 steps each") < out.index("sweep: point 1/2")
    assert "plan: about 20 s of training, an estimate" in out
    monkeypatch.setattr(packing, "measure", lambda *a, **k: pytest.fail("--no-estimate still timed steps"))
    assert sweep.main_([*args, "--no-estimate"]) == 0
    assert "plan: no time estimate (--no-estimate)." in capsys.readouterr().out


def fake_sweep(folder, preset, metrics):
    """A finished two-seed sweep of poster_table1_dsprites' settings on disk, without training anything."""
    settings = [s for s, _ in SWEEP_FIGURES["poster_table1_dsprites"]["settings"]]
    zipped = {k: [s[k] for s in settings] for k in ("objective", "beta", "gamma")}
    points = [{"name": f"objective={s['objective']},beta={s['beta']:g},gamma={s['gamma']:g},seed={seed}",
               "overrides": {**s, "seed": seed}} for s in settings for seed in (0, 1)]
    folder.mkdir()
    (folder / "sweep.yaml").write_text(yaml.safe_dump({"preset": "betaH_dsprites", "sweep": preset,
                                                       "base": {"steps": 300000, "active_kl": 0.01},
                                                       "grid": {"seed": [0, 1]}, "zip": [zipped], "points": points},
                                                      sort_keys=False))
    for i, point in enumerate(points):
        run = folder / point["name"]
        run.mkdir()
        (run / "log.csv").write_text(f"step,recon,kl,kl_0\n300000,{30 + i},{9 + i},0.5\n")
        (run / "metrics.yaml").write_text(yaml.safe_dump({300000: {m: 0.1 + 0.01 * i for m in metrics}}))
        (run / "status.yaml").write_text("status: done\nreason: ''\nwall_s: 1.0\n")


def test_summary_and_html_show_published_figures_beside_measured_ones(tmp_path):
    fake_sweep(tmp_path / "poster", "poster_table1_dsprites", ["aam", "mmig", "mig"])
    sweep_report.write_report(str(tmp_path / "poster"))
    summary = (tmp_path / "poster" / "summary.md").read_text()
    header = summary.splitlines()[2]
    assert "| aam | aam published |" in header and "| mmig | mmig published |" in header
    assert "mig published" not in header.replace("mmig published", "")   # the poster has no MIG
    row = next(line for line in summary.splitlines() if line.startswith("| betaH | 50 | 1 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[cells.index("0.08") - 1].startswith("0.") and " ± " in cells[cells.index("0.08") - 1]
    assert "| 4.0e-4 |" in row
    assert "Dubois" in summary and "Table 1" in summary and "Protocol of `aam`" in summary
    assert "measured here, Dubois et al. 2019 Eq. 2" in summary and "after 300,000 steps" in summary
    page = (tmp_path / "poster" / "sweep.html").read_text()
    assert "<th>aam published</th>" in page and "<td>0.87</td>" in page and "Protocol of aam" in page

    fake_sweep(tmp_path / "plain", None, ["aam", "mmig"])             # a sweep of one's own: no published column
    sweep_report.write_report(str(tmp_path / "plain"))
    assert "published" not in (tmp_path / "plain" / "summary.md").read_text()


def test_tradeoff_png_draws_many_quantities_in_rows_of_panels(tmp_path):
    metrics = ["aam", "mmig", "mig", "sap", "factor_vae", "beta_vae", "dci_disentanglement"]
    fake_sweep(tmp_path / "s", "poster_table1_dsprites", metrics)
    sweep_report.write_report(str(tmp_path / "s"))
    width, height = Image.open(tmp_path / "s" / "tradeoff.png").size
    panels = 2 + len(metrics)                                          # recon, kl and each metric
    columns = sweep_report.COLUMNS
    assert height / width == pytest.approx((3.4 * math.ceil(panels / columns)) / (4.2 * columns), rel=0.05)
    assert math.ceil(panels / columns) == 3
