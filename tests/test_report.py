"""The run report links only files that exist and shows the latest pictures; the log plots read any objective's columns."""
import math
import re

import torch
import yaml
from torchvision.utils import save_image

import main
from betavae.pictures import plots
from betavae.pictures import report

LOG = ("step,loss,recon,kl,tc,beta,capacity,kl_0,kl_1,kl_2\n"
       "10,90.0,80.0,10.0,-0.5,1.0,0.0,5.0,4.0,1.0\n"
       "20,70.0,60.0,9.0,-0.2,4.0,5.0,6.0,2.9,0.001\n")


def links(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', page)


def fake_run(folder):
    (folder / "log.csv").write_text(LOG)
    (folder / "params.yaml").write_text(yaml.safe_dump({"params": {"beta": 4.0, "latent_dim": 3},
                                                        "command": "python main.py --set beta=4"}))
    for step in (10, 20):
        for kind in ("reconstructions", "traversal_grid", "heatmaps"):
            save_image(torch.rand(2, 1, 8, 8), str(folder / f"{kind}_step{step:06d}.png"))
    (folder / "traversal_grid_step000020.gif").write_bytes(b"GIF89a")
    return folder


def test_report_links_resolve_and_show_the_latest_step(tmp_path):
    run = fake_run(tmp_path)
    page = open(report.refresh(str(run), active_kl=0.01)).read()
    targets = links(page)
    assert targets and all((run / t).is_file() for t in targets)
    assert {"losses.png", "kl_per_dim.png", "kl_final.png", "log.csv", "params.yaml",
            "traversal_grid_step000020.gif"} <= set(targets)
    shown = re.findall(r'<img src="([^"]*)"', page)
    assert "reconstructions_step000020.png" in shown and "reconstructions_step000010.png" not in shown
    assert 'href="reconstructions_step000010.png"' in page  # older steps stay one click away
    assert shown.index("reconstructions_step000020.png") < shown.index("heatmaps_step000020.png")
    assert "<script" not in page and "http" not in page and "Metrics" not in page
    assert "python main.py --set beta=4" in page and "z1 2.900" in page


def test_a_run_as_long_as_the_published_ones_gets_no_warning():
    page = report.metrics_html({300000: {"mig": 0.2}})
    assert "InfoGAN-CR" in page and "do not compare" not in page and "this run" not in page


def test_report_shows_metrics_when_present(tmp_path):
    run = fake_run(tmp_path)
    (run / "metrics.yaml").write_text(yaml.safe_dump({"mig": 0.31, "beta_vae": {"accuracy": 0.87}}))
    page = open(report.write_report(str(run))).read()
    assert "Metrics" in page and "beta_vae.accuracy" in page and "0.87" in page
    assert all((run / t).is_file() for t in links(page))


def test_log_columns_are_read_generically(tmp_path):
    # A column added mid-run (a resumed run under a new objective) reads as NaN where it was absent.
    (tmp_path / "log.csv").write_text("step,loss,kl_0\n1,3.0,\n2,2.0,0.5\n")
    columns = plots.read_log(str(tmp_path / "log.csv"))
    assert columns["step"] == [1.0, 2.0] and math.isnan(columns["kl_0"][0]) and columns["kl_0"][1] == 0.5
    many = {"step": [1], "loss": [1], "recon": [1], "tc": [1], "beta": [1], "capacity": [1], "kl_10": [1], "kl_2": [1]}
    assert plots.loss_columns(many) == ["loss", "recon", "tc"]
    assert plots.kl_columns(many) == ["kl_2", "kl_10"]


def test_a_short_run_refreshes_its_report_at_sample_steps(tmp_path):
    args = ["--set", f"out_dir={tmp_path}", "--set", f"data_dir={tmp_path}", "--set", "run_name=r", "--set", "steps=3",
            "--set", "batch_size=8", "--set", "log_every=2", "--set", "sample_every=2", "--set", "checkpoint_every=3",
            "--set", "traverse_samples=16", "--set", "device=cpu", "--set", "factor_samples=0", "--set", "metrics=false"]
    assert main.main(args) == 0
    run = tmp_path / "r"
    page = (run / "report.html").read_text()
    assert all((run / t).is_file() for t in links(page))
    assert 'src="traversal_grid_step000003.png"' in page and 'href="traversal_grid_step000002.png"' in page
    assert 'src="samples_step000003.png"' in page and 'src="kl_final.png"' in page


def test_metric_table_has_one_row_per_metric_and_details_hold_samples_and_timings(tmp_path):
    run = fake_run(tmp_path)
    scores = {"mig": 0.12, "aam": 0.5, "aam_histogram": 0.4, "dci_disentanglement": 0.3}
    record = {step: {"protocol": "p", "samples": {"mig": 10000, "factor_vae_train": 10000},
                     **{k: v + step / 1e6 for k, v in scores.items()},
                     "seconds": {"mig": 1.5, "factor_vae": 2.0}} for step in (3000, 6000)}
    (run / "metrics.yaml").write_text(yaml.safe_dump(record))
    page = report.build_report(str(run))
    table = re.search(r"<table class='metrics'>(.*?)</table>", page, re.S)[1]
    names = re.findall(r"<tr><th>([^<]*)</th><td>", table)
    assert sorted(names) == ["aam", "dci_disentanglement", "mig"]          # one row per headline score, nothing else
    assert "aam_histogram" in re.findall(r"<details>(.*?)</details>", page, re.S)[-1]  # the others fold below
    assert "samples" not in table and "seconds" not in table and "6000." not in table
    assert "0.126" in table and "0.123" not in table                    # the latest step's value
    assert "InfoGAN-CR" in table and "0.87" in table                     # published MIG, DCI and AAM figures
    assert "[300k steps; this run: 6,000]" in table and "do not compare" in page  # a shorter run says so
    details = re.search(r"<details>(.*?)</details>", page, re.S)[1]
    for row in ("samples.mig", "samples.factor_vae_train", "seconds.mig", "seconds.factor_vae", "earlier step 3000"):
        assert row in details
