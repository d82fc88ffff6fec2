"""Sweeps: grid × zip expansion, bad grids, a tiny 3-point sweep end to end, resume, a failing point, --report."""
import csv
import html.parser
import os
import re
import urllib.parse

import pytest
import yaml

import main
import sweep
from betavae.pictures import sweep_report
from params import Params, UserError
from betavae.scale import sweep_spec, sweeping
from betavae.training import loop, run_folder

TINY = ["steps=4", "batch_size=16", "log_every=2", "sample_every=2", "checkpoint_every=2", "traverse_samples=40",
        "device=cpu", "metrics=false", "factor_samples=0", "lr=0.001", "pack=1"]
# pack=1: these tests replace main.train, which a pack (pack=auto may choose one on a noisy machine) bypasses.


def tiny_args(tmp_path, *extra):
    return ["--name", "s", "--set", f"out_dir={tmp_path}", f"data_dir={tmp_path}", *TINY, *extra]


def test_grid_times_zip_gives_the_product_with_readable_names():
    points = sweep_spec.expand(Params(), {"seed": [0, 1], "beta": [4.0, 0.5]},
                          [{"beta_start": [100.0, 0.0], "anneal_steps": [40, 10]}])
    assert len(points) == 8
    assert points[0].name == "beta=4,beta_start=100,anneal_steps=40,seed=0"   # seed varies last
    assert [p.params.seed for p in points[:2]] == [0, 1]
    assert {(p.params.beta_start, p.params.anneal_steps) for p in points} == {(100.0, 40), (0.0, 10)}
    assert all(p.params.run_name == p.name for p in points) and len({p.name for p in points}) == 8


def test_cli_grid_zip_and_set_parse_into_a_spec(tmp_path):
    config = tmp_path / "s.yaml"
    config.write_text("preset: demo\nset: {latent_dim: 6}\ngrid: {beta: [1, 2]}\n"
                      "zip: {lr: [0.001, 0.01], seed: [3, 4]}\n")
    args = sweep.parse_args(["--config", str(config), "--grid", "batch_size=8,16", "--set", "steps=5", "log_every=1",
                             "--set", "beta=3"])
    spec = sweep_spec.load_spec(args)
    base = sweep_spec.base_params(spec)
    assert (base.steps, base.log_every, base.latent_dim, base.lr) == (5, 1, 6, 5e-4)   # demo's lr, file's latent_dim
    assert len(sweep_spec.expand(base, spec["grid"], spec["zip"])) == 2 * 2 * 2


@pytest.mark.parametrize("bad", [["--grid", "betta=1,2"], ["--grid", "beta=a,b"], ["--grid", "beta="],
                                 ["--zip", "beta=1,2", "seed=1,2,3"], ["--grid", "latent_dim=0,4"],
                                 ["--preset", "nope"], ["--grid", "beta=1,1"]])
def test_a_bad_grid_exits_2_before_any_folder(tmp_path, capsys, bad):
    assert sweep.main_([*bad, "--set", f"out_dir={tmp_path}/out", "device=cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


class Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("src", "href")]


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_three_point_sweep_resume_and_report(tmp_path, capsys):
    assert sweep.main_(tiny_args(tmp_path, "--grid", "beta=1,4,16")) == 0
    folder = tmp_path / "s"
    names = ["beta=1", "beta=4", "beta=16"]
    for name in names:
        run = folder / name
        for file in ["params.yaml", "log.csv", "checkpoint.pt", "report.html", "traversal_grid_step000004.png"]:
            assert (run / file).is_file(), (name, file)
        assert yaml.safe_load((run / "status.yaml").read_text())["status"] == "done"
        assert yaml.safe_load((run / "params.yaml").read_text())["params"]["beta"] == float(name.split("=")[1])
    rows = read_csv(folder / "sweep.csv")
    assert [r["point"] for r in rows] == names and all(r["status"] == "done" for r in rows)
    assert all(float(r["steps_per_s"]) > 0 and r["recon"] and r["kl"] for r in rows)
    assert (folder / "tradeoff.png").stat().st_size > 1000
    parser = Links()
    parser.feed((folder / "sweep.html").read_text())
    local = [link for link in parser.links if "://" not in link]
    assert any("traversal_highest_mean" in link for link in local) and "tradeoff.png" in local
    page = (folder / "sweep.html").read_text()
    assert "<style>" in page and "<th>recon (nats)</th>" in page and "<th>steps_per_s (steps/s)</th>" in page
    for link in local:
        assert not os.path.isabs(link) and (folder / urllib.parse.unquote(link)).is_file(), link

    before = {n: (folder / n / "checkpoint.pt").stat().st_mtime_ns for n in names}
    csv_before, html_before = (folder / "sweep.csv").read_bytes(), (folder / "sweep.html").read_bytes()
    png_before, summary_before = (folder / "tradeoff.png").read_bytes(), (folder / "summary.md").read_bytes()
    assert "| beta | n | recon |" in summary_before.decode()
    assert sweep.main_(["--report", str(folder)]) == 0
    assert (folder / "summary.md").read_bytes() == summary_before
    assert (folder / "sweep.csv").read_bytes() == csv_before and (folder / "sweep.html").read_bytes() == html_before
    assert (folder / "tradeoff.png").read_bytes() == png_before
    (folder / "beta=16" / "status.yaml").unlink()
    assert sweep.main_(["--resume", str(folder)]) == 0
    after = {n: (folder / n / "checkpoint.pt").stat().st_mtime_ns for n in names}
    assert after["beta=1"] == before["beta=1"]                      # finished: skipped
    assert after["beta=16"] != before["beta=16"]                    # unfinished: run again
    assert yaml.safe_load((folder / "beta=16" / "status.yaml").read_text())["status"] == "done"
    assert main.main(["--resume", str(folder / "beta=4"), "--set", "steps=6"]) == 0   # a point is an ordinary run


def test_summary_gives_mean_std_and_range_over_finished_seeds_per_setting():
    rows = [{"point": f"beta={b},seed={s}", "beta": b, "seed": s, "status": status, "recon": recon, "kl": 2.0,
             "mig": mig, "active_latents": 3}
            for b, s, status, recon, mig in [(1.0, 0, "done", 1.0, 0.1), (1.0, 1, "done", 3.0, 0.3),
                                              (1.0, 2, "failed", 99.0, 0.9), (4.0, 0, "done", 5.0, 0.5)]]
    header, table = sweep_report.summarise(["beta", "seed"], rows, ["mig"])
    assert header == ["beta", "n", "recon", "kl", "mig", "active_latents"]
    assert table[0] == ["1", "2/3", "2 ± 1.4 [1, 3]", "2 ± 0 [2, 2]", "0.2 ± 0.14 [0.1, 0.3]", "3 ± 0 [3, 3]"]
    assert table[1][:3] == ["4", "1/1", "5 ± 0 [5, 5]"]                 # one seed: no spread


def test_resume_finishes_a_partial_point_from_its_checkpoint(tmp_path):
    assert sweep.main_(tiny_args(tmp_path, "--grid", "seed=0,1")) == 0
    folder = tmp_path / "s"
    assert sweep.main_(["--resume", str(folder), "--set", "steps=6"]) == 0
    for name in ["seed=0", "seed=1"]:
        steps = [int(r["step"]) for r in read_csv(folder / name / "log.csv")]
        assert steps == [2, 4, 6]                                   # continued, not restarted
    rows = read_csv(folder / "sweep.csv")
    assert {r["status"] for r in rows} == {"done"}
    # UDR over the two seeds of the one setting, into each point's udr.yaml and the sweep's tables
    records = [yaml.safe_load((folder / n / "udr.yaml").read_text()) for n in ["seed=0", "seed=1"]]
    assert records[0]["compared_with"] == ["seed=1"] and records[1]["compared_with"] == ["seed=0"]
    assert all(0 <= float(r["udr_lasso"]) <= 1 and 0 <= float(r["udr_spearman"]) <= 1 for r in rows)
    assert "udr_lasso" in (folder / "summary.md").read_text() and "udr_spearman" in (folder / "sweep.html").read_text()


def test_a_failing_point_is_recorded_and_the_others_finish(tmp_path, monkeypatch):
    real_train = loop.train

    def train(params, dataset, run_dir, device, checkpoint=None):
        if params.beta == 2.0:
            with open(os.path.join(run_dir, "run.log"), "a") as f:
                f.write("error: the loss became non-finite before step 2; resume with a lower lr\n")
            return 1
        return real_train(params, dataset, run_dir, device, checkpoint)

    monkeypatch.setattr(loop, "train", train)
    assert sweep.main_(tiny_args(tmp_path, "--grid", "beta=1,2,3")) == 1
    rows = {r["point"]: r for r in read_csv(tmp_path / "s" / "sweep.csv")}
    assert rows["beta=2"]["status"] == "failed" and "non-finite" in rows["beta=2"]["reason"]
    assert rows["beta=1"]["status"] == rows["beta=3"]["status"] == "done"


def test_ctrl_c_stops_the_sweep_with_a_resume_command(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(loop, "train", lambda *a, **k: calls.append(1) or 130)
    assert sweep.main_(tiny_args(tmp_path, "--grid", "beta=1,2")) == 130
    assert len(calls) == 1 and "python sweep.py --resume" in capsys.readouterr().err
    assert yaml.safe_load((tmp_path / "s" / "beta=1" / "status.yaml").read_text())["status"] == "stopped"


def test_run_points_builds_each_dataset_once(tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(sweeping, "make_dataset", lambda params, device: built.append(params.data_dir) or object())
    monkeypatch.setattr(loop, "train", lambda *a, **k: 0)
    monkeypatch.setattr(run_folder, "write_params", lambda *a, **k: None)
    points = sweep_spec.expand(Params(data_dir=str(tmp_path), pack=1), {"beta": [1.0, 2.0], "seed": [0, 1]}, [])
    results = sweeping.run_points(points, "cpu", out=str(tmp_path / "out"))
    assert [r.status for r in results] == ["done"] * 4 and built == [str(tmp_path)]


def test_unknown_sweep_preset_is_a_user_error():
    with pytest.raises(UserError):
        sweep_spec.base_params({"preset": "missing", "set": {}})


def test_a_mistyped_sweep_preset_suggests_the_closest_names(tmp_path, capsys):
    assert sweep.main_(["--preset", "sweep_dem", "--set", f"out_dir={tmp_path}", "--no-estimate"]) == 2
    error = capsys.readouterr().err
    assert "did you mean: sweep_demo" in error and "beta_tradeoff_dsprites" not in error


def test_a_sweep_point_s_recorded_command_reproduces_its_params(tmp_path):
    import shlex

    args = ["--name", "s", "--preset", "demo", "--grid", "beta=2,3", "--set", f"out_dir={tmp_path}",
            f"data_dir={tmp_path}", *[a for a in TINY if not a.startswith("lr=")], "lr=5e-4"]
    assert sweep.main_(args) == 0
    point = yaml.safe_load((tmp_path / "s" / "beta=3" / "params.yaml").read_text())
    words = shlex.split(point["command"])
    assert words[:2] == ["python", "main.py"] and "--resume" not in words
    assert main.main([*words[2:], "--set", f"out_dir={tmp_path / 'again'}", "run_name=r"]) == 0
    again = yaml.safe_load((tmp_path / "again" / "r" / "params.yaml").read_text())["params"]
    differ = {k for k in again if again[k] != point["params"][k]}
    assert differ == {"out_dir", "run_name"}          # the demo preset's lr, steps, β and every override kept
    log = (tmp_path / "s" / "beta=3" / "run.log").read_text()
    started = float(re.search(r"first training step done ([\d.]+) s after the point.s start", log).group(1))
    first_wall = yaml.safe_load((tmp_path / "s" / "beta=2" / "status.yaml").read_text())["wall_s"]
    assert started < first_wall                         # counted from the point's own start, not the sweep's


def test_a_categorical_sweep_axis_is_not_joined_by_lines(tmp_path, monkeypatch):
    figures = []
    real = sweep_report.subplots
    monkeypatch.setattr(sweep_report, "subplots", lambda *a, **k: figures.append(real(*a, **k)) or figures[-1])
    rows = [{"amp": amp, "seed": s, "recon": 100.0 + s, "kl": 5.0, "mig": 0.1 * s} for amp in (False, "bf16")
            for s in range(2)]
    sweep_report.plot_tradeoff(str(tmp_path / "c.png"), ["amp", "seed"], rows, ["mig"])
    axes = [ax for ax in figures[-1][1].flat if ax.get_visible()]
    joined = [line for ax in axes for line in ax.get_lines() if len(line.get_xdata()) > 1 and line.get_linestyle() != "None"]
    assert joined == [] and [t.get_text() for t in axes[0].get_xticklabels()] == ["false", "bf16"]
    numeric = [{**r, "amp": 1.0 if r["amp"] else 2.0} for r in rows]
    sweep_report.plot_tradeoff(str(tmp_path / "n.png"), ["amp", "seed"], numeric, ["mig"])
    assert any(len(line.get_xdata()) > 1 for line in figures[-1][1].flat[0].get_lines())  # numbers keep their line


def test_report_of_a_folder_that_is_not_a_sweep_is_one_sentence(tmp_path, capsys):
    assert sweep.main_(["--report", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
