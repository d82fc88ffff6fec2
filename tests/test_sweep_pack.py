"""Sweeps with pack=K: points sharing packed.pack_key train as one pack and still get complete folders."""
import csv
import os
import signal

import torch
import yaml

from betavae.scale import packed
import sweep
from test_sweep import tiny_args


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_packed_sweep_gives_the_same_folders_and_columns_as_one_after_another(tmp_path, monkeypatch):
    packs = []
    real = packed.train_pack
    monkeypatch.setattr(packed, "train_pack", lambda params_list, *a, **k: packs.append(len(params_list))
                        or real(params_list, *a, **k))
    assert sweep.main_(tiny_args(tmp_path / "one", "--grid", "beta=1,4,16", "--set", "pack=1")) == 0
    assert packs == []                                              # K = 1: the one-after-another path
    assert sweep.main_(tiny_args(tmp_path / "pack", "--grid", "beta=1,4,16", "--set", "pack=3")) == 0
    assert packs == [3]                                             # the three points in one pack
    for name in ["beta=1", "beta=4", "beta=16"]:
        run = tmp_path / "pack" / "s" / name
        for file in ["params.yaml", "log.csv", "checkpoint.pt", "report.html", "traversal_grid_step000004.png"]:
            assert (run / file).is_file(), (name, file)
        assert [int(r["step"]) for r in read_csv(run / "log.csv")] == [2, 4]
        assert open(run / "run.log").read().count("done:") == 1
        assert yaml.safe_load((run / "status.yaml").read_text())["status"] == "done"
    alone, together = read_csv(tmp_path / "one" / "s" / "sweep.csv"), read_csv(tmp_path / "pack" / "s" / "sweep.csv")
    assert list(alone[0]) == list(together[0]) and [r["point"] for r in together] == ["beta=1", "beta=4", "beta=16"]
    assert all(float(r["steps_per_s"]) > 0 for r in together)     # parsed from the pack's run.log line
    # A packed model is the model trained alone: the same final losses (tests/test_packed.py bounds the drift).
    for a, b in zip(alone, together):
        assert abs(float(a["recon"]) - float(b["recon"])) <= 1e-3 * abs(float(a["recon"]))

    (tmp_path / "pack" / "s" / "beta=4" / "status.yaml").unlink()
    packs.clear()
    assert sweep.main_(["--resume", str(tmp_path / "pack" / "s"), "--set", "steps=6"]) == 0
    assert packs == [3]                                             # a whole pack resumes from its checkpoints
    for name in ["beta=1", "beta=4", "beta=16"]:
        assert [int(r["step"]) for r in read_csv(tmp_path / "pack" / "s" / name / "log.csv")] == [2, 4, 6]


def test_sigterm_stops_a_pack_with_every_model_checkpointed(tmp_path, monkeypatch):
    real_step = packed.Pack.train_step

    def train_step(self, xs, step):
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)                    # as Slurm or torchrun stopping the job
        return real_step(self, xs, step)

    monkeypatch.setattr(packed.Pack, "train_step", train_step)
    assert sweep.main_(tiny_args(tmp_path, "--grid", "beta=1,4", "--set", "pack=2")) == 130
    for name in ["beta=1", "beta=4"]:
        run = tmp_path / "s" / name
        assert yaml.safe_load((run / "status.yaml").read_text())["status"] == "stopped"
        assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 2
    monkeypatch.setattr(packed.Pack, "train_step", real_step)
    assert sweep.main_(["--resume", str(tmp_path / "s")]) == 0
    assert [int(r["step"]) for r in read_csv(tmp_path / "s" / "beta=4" / "log.csv")] == [2, 4]
