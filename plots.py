"""Plots of a run's training log (log.csv): loss terms and KL per latent dimension over steps."""
from __future__ import annotations

import csv
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_log(path: str) -> dict[str, list[float]]:
    """log.csv as columns of floats."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {key: [float(r[key]) for r in rows if r.get(key) not in (None, "")] for key in (rows[0] if rows else {})}


def plot_log(path: str, out_dir: str) -> list[str]:
    """losses.png (every scalar term, the β schedule on a second axis) and kl_per_dim.png; returns the paths."""
    columns = read_log(path)
    if not columns.get("step"):
        return []
    steps = columns["step"]
    written = []

    figure, axis = plt.subplots(figsize=(7, 4), dpi=110)
    for name in [k for k in columns if k not in ("step", "beta") and not k.startswith("kl_")]:
        axis.plot(steps, columns[name], label=name)
    axis.set_xlabel("step"), axis.set_ylabel("nats per image"), axis.set_yscale("symlog")
    axis.legend(loc="upper left", fontsize=8)
    if "beta" in columns:
        twin = axis.twinx()
        twin.plot(steps, columns["beta"], color="black", linestyle="--", linewidth=1, label="β")
        twin.set_ylabel("β (dashed)")
    figure.tight_layout()
    written.append(os.path.join(out_dir, "losses.png"))
    figure.savefig(written[-1])
    plt.close(figure)

    dims = sorted((k for k in columns if k.startswith("kl_") and k[3:].isdigit()), key=lambda k: int(k[3:]))
    if dims:
        figure, axis = plt.subplots(figsize=(7, 4), dpi=110)
        for name in dims:
            axis.plot(steps, columns[name], label=f"z{name[3:]}")
        axis.set_xlabel("step"), axis.set_ylabel("KL to the prior (nats)")
        axis.legend(loc="upper left", fontsize=7, ncol=2)
        figure.tight_layout()
        written.append(os.path.join(out_dir, "kl_per_dim.png"))
        figure.savefig(written[-1])
        plt.close(figure)
    return written
