"""UDR (Duan et al. 2020) over trained runs: the runs of one sweep setting (its seeds), or run folders named on the
command line (`traverse.py RUN RUN ... --udr`). Each run folder gets a udr.yaml with its scores and the runs it was
compared with; sweep.csv, summary.md and sweep.html read it as they read metrics.yaml."""
from __future__ import annotations

import os
from typing import Callable

import yaml

from betavae.checkpoints import load_checkpoint, model_from_checkpoint
from betavae.errors import UserError
from betavae.evaluation import protocol
from betavae.sources.interface import make_dataset
from params import Params, apply_overrides

UDR_FILE = "udr.yaml"


def checkpoint_of(run: str) -> str:
    path = os.path.join(run, "checkpoint.pt") if os.path.isdir(run) else run
    if not os.path.isfile(path):
        raise UserError(f"{run} holds no checkpoint.pt; give run folders written by main.py or sweep.py.")
    return path


def udr_of_runs(runs: list[str], seed: int = 0) -> dict[str, dict]:
    """Run folder (or checkpoint) → {"udr_lasso", "udr_spearman", "compared_with", "points"}; the runs must share
    their data and latent size, and there must be two or more."""
    from betavae.evaluation.scores.udr import udr_of_models

    if len(runs) < 2:
        raise UserError("UDR compares two or more runs trained on the same data; name more run folders.")
    states = [load_checkpoint(checkpoint_of(run)) for run in runs]
    params = [apply_overrides(Params(), state["params"], f"checkpoint of {run}") for state, run in zip(states, runs)]
    for key in ("dataset", "data_dir", "data_seed", "celeba_crop", "latent_dim"):
        values = {str(getattr(p, key)) for p in params}
        if len(values) > 1:
            raise UserError(f"UDR compares runs on the same data and latent size, but their {key} differs "
                            f"({', '.join(sorted(values))}); name runs of one setting.")
    models = [model_from_checkpoint(state).eval() for state in states]
    scores = udr_of_models(models, make_dataset(params[0]), seed)
    names = [os.path.basename(os.path.normpath(os.path.dirname(checkpoint_of(run)))) for run in runs]
    return {run: {"udr_lasso": round(scores["udr_lasso"][i], 4), "udr_spearman": round(scores["udr_spearman"][i], 4),
                  "compared_with": [n for j, n in enumerate(names) if j != i],
                  "points": protocol.count("udr_points")} for i, run in enumerate(runs)}


def write_udr(runs: list[str], seed: int = 0) -> dict[str, dict]:
    """`udr_of_runs`, each run's record written to its folder's udr.yaml."""
    results = udr_of_runs(runs, seed)
    for run, record in results.items():
        with open(os.path.join(os.path.dirname(checkpoint_of(run)), UDR_FILE), "w") as f:
            yaml.safe_dump(record, f, sort_keys=False)
    return results


def sweep_udr(sweep_dir: str, say: Callable[[str], object] = print) -> None:
    """UDR for every setting of a sweep with two or more finished seeds, where udr.yaml is missing, was computed
    against other runs, or is older than a checkpoint; one line when no setting has two seeds."""
    with open(os.path.join(sweep_dir, "sweep.yaml")) as f:
        spec = yaml.safe_load(f)
    settings: dict[tuple, list[str]] = {}
    for entry in spec["points"]:
        folder = os.path.join(sweep_dir, entry["name"])
        if (_read(folder, "status.yaml") or {}).get("status") == "done":
            setting = tuple(sorted((k, str(v)) for k, v in entry["overrides"].items() if k != "seed"))
            settings.setdefault(setting, []).append(folder)
    groups = [folders for folders in settings.values() if len(folders) >= 2]
    if not groups:
        say("udr skipped: no setting of this sweep has two or more finished seeds")
        return
    for folders in groups:
        names = sorted(os.path.basename(f) for f in folders)
        current = [_read(f, UDR_FILE) for f in folders]
        newest = max(os.path.getmtime(os.path.join(f, "checkpoint.pt")) for f in folders)
        if all(r and sorted(r["compared_with"] + [os.path.basename(f)]) == names
               and os.path.getmtime(os.path.join(f, UDR_FILE)) >= newest for r, f in zip(current, folders)):
            continue  # computed against these runs as they are now
        results = write_udr(folders)
        say("udr: " + ", ".join(f"{os.path.basename(f)} lasso {r['udr_lasso']:.3f} spearman {r['udr_spearman']:.3f}"
                                for f, r in results.items()))


def _read(folder: str, name: str) -> dict | None:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return yaml.safe_load(f)
