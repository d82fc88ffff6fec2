"""torchrun: a 2-process CPU sweep (gloo) runs every point exactly once, rank 0 reports, --resume re-splits."""
import csv
import os
import subprocess
import sys

import yaml

from test_sweep import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ["beta=1,seed=0", "beta=1,seed=1", "beta=2,seed=0", "beta=2,seed=1"]


def torchrun(*args):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", "sweep.py", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def steps(folder):
    with open(folder / "log.csv") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def test_two_ranks_run_each_point_once_and_resume_re_splits(tmp_path):
    done = torchrun("--name", "s", "--grid", "beta=1,2", "--grid", "seed=0,1",
                    "--set", f"out_dir={tmp_path}", f"data_dir={tmp_path}", *TINY, "pack=1")
    assert done.returncode == 0, done.stdout + done.stderr
    folder = tmp_path / "s"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]          # one sweep folder, agreed by both ranks
    for name in NAMES:
        run = folder / name
        assert steps(run) == [2, 4], name                                # each logged step exactly once
        assert open(run / "run.log").read().count("done:") == 1, name   # trained by one rank only
        assert yaml.safe_load((run / "status.yaml").read_text())["status"] == "done"
    with open(folder / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["point"] for r in rows) == NAMES and {r["status"] for r in rows} == {"done"}
    assert done.stdout.count("sweep done: 4/4") == 1                    # rank 0 alone reports
    assert "rank 1: sweep: point" in done.stdout and "rank 0: sweep: point" in done.stdout

    (folder / "beta=2,seed=1" / "status.yaml").unlink()                 # one point left unfinished
    csv_before = (folder / "sweep.csv").stat().st_mtime_ns
    resumed = torchrun("--resume", str(folder))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert resumed.stdout.count("sweep: point") == 1 and "beta=2,seed=1" in resumed.stdout   # only it, on one rank
    for name in NAMES:                                                   # the others skipped, untouched
        assert steps(folder / name) == [2, 4], name
        assert open(folder / name / "run.log").read().count("done:") == (2 if name == "beta=2,seed=1" else 1), name
    assert (folder / "sweep.csv").stat().st_mtime_ns != csv_before
    with open(folder / "sweep.csv") as f:
        assert {r["status"] for r in csv.DictReader(f)} == {"done"}
