"""Plots of a run's training log (log.csv): loss terms, KL per latent dimension over steps, final KL per dimension."""
from __future__ import annotations

import csv
import math
import os

from matplotlib.figure import Figure


def subplots(rows: int = 1, columns: int = 1, *, figsize=None, dpi=None, **options):
    """A new figure and its axes, as pyplot.subplots makes them, without pyplot: no backend, no global state,
    nothing to close (Figure.savefig draws with Agg)."""
    figure = Figure(figsize=figsize, dpi=dpi)
    return figure, figure.subplots(rows, columns, **options)


# Weight schedules a log may hold (which ones depends on the objective), drawn on a second axis, not as losses.
SCHEDULES = {"beta": "β", "capacity": "C (nats)"}


def read_log(path: str) -> dict[str, list[float]]:
    """log.csv as columns of floats, aligned with `step`; a cell left empty (a column added mid-run) is NaN."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    names = list(rows[0]) if rows else []
    return {key: [float(r[key]) if r.get(key) not in (None, "") else math.nan for r in rows] for key in names}


def kl_columns(columns: dict) -> list[str]:
    """kl_0 … kl_{D-1}, in latent order."""
    return sorted((k for k in columns if k.startswith("kl_") and k[3:].isdigit()), key=lambda k: int(k[3:]))


def loss_columns(columns: dict) -> list[str]:
    """Every other scalar column: whatever terms the objective logged."""
    return [k for k in columns if k != "step" and k not in SCHEDULES and k not in kl_columns(columns)]


def _schedule_axis(axis, columns: dict) -> None:
    """The β and/or C schedule, dashed grey, on a second y axis drawn beneath the data's axis, so it never hides a
    curve."""
    present = [k for k in SCHEDULES if k in columns]
    if not present:
        return
    twin = axis.twinx()
    axis.set_zorder(twin.get_zorder() + 1)  # the curves above the schedule
    axis.patch.set_visible(False)           # ... and the twin seen through the data axis's background
    for name, style in zip(present, ("--", ":")):
        twin.plot(columns["step"], columns[name], color="0.55", linestyle=style, linewidth=1, label=SCHEDULES[name])
    twin.set_ylim(bottom=0)  # β and C are never negative; from zero, a constant β reads as constant
    twin.set_ylabel(" / ".join(f"{SCHEDULES[k]} ({s})" for k, s in zip(present, ("dashed", "dotted"))))


def _legend_below(axis, entries: int) -> None:
    """The legend under the axes, outside the data, in as few rows as fit."""
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=7, ncol=min(max(entries, 1), 10),
                frameon=False)


def plot_losses(columns: dict, path: str) -> None:
    """Every loss term over steps (symlog: terms differ by orders of magnitude and some may be negative)."""
    figure, axis = subplots(figsize=(7, 4), dpi=110)
    for name in loss_columns(columns):
        axis.plot(columns["step"], columns[name], label=name)
    axis.set_xlabel("step"), axis.set_ylabel("nats per image"), axis.set_yscale("symlog")
    _legend_below(axis, len(loss_columns(columns)))
    _schedule_axis(axis, columns)
    figure.tight_layout()
    figure.savefig(path)


def plot_kl_per_dim(columns: dict, path: str) -> None:
    """KL of each latent dimension to the prior over steps, with the β or C schedule (the poster's Fig. 3)."""
    figure, axis = subplots(figsize=(7, 4), dpi=110)
    for name in kl_columns(columns):
        axis.plot(columns["step"], columns[name], label=f"z{name[3:]}")
    axis.set_xlabel("step"), axis.set_ylabel("KL to the prior (nats)")
    _legend_below(axis, len(kl_columns(columns)))
    _schedule_axis(axis, columns)
    figure.tight_layout()
    figure.savefig(path)


def plot_final_kl(columns: dict, path: str, active_kl: float = 0.01) -> None:
    """The last logged KL per dimension as bars, the activity threshold as a line."""
    names = kl_columns(columns)
    values = [columns[k][-1] for k in names]
    figure, axis = subplots(figsize=(max(4.0, 0.45 * len(names) + 1.5), 3.2), dpi=110)
    axis.bar(range(len(names)), values, color=["C0" if v >= active_kl else "0.7" for v in values])
    axis.axhline(active_kl, color="black", linewidth=0.8, linestyle=":", label=f"active threshold {active_kl:g}")
    axis.set_xticks(range(len(names)), [f"z{k[3:]}" for k in names], fontsize=8)
    axis.set_ylabel("KL (nats)"), axis.set_title(f"KL per dimension at step {columns['step'][-1]:.0f}", fontsize=9)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)


def plot_log(path: str, out_dir: str, active_kl: float = 0.01) -> list[str]:
    """losses.png, kl_per_dim.png and kl_final.png from log.csv (the last two when it has kl_i columns); returns the paths."""
    if not os.path.isfile(path):
        return []
    columns = read_log(path)
    if not columns.get("step"):
        return []
    written = [os.path.join(out_dir, "losses.png")]
    plot_losses(columns, written[-1])
    if kl_columns(columns):
        written.append(os.path.join(out_dir, "kl_per_dim.png"))
        plot_kl_per_dim(columns, written[-1])
        written.append(os.path.join(out_dir, "kl_final.png"))
        plot_final_kl(columns, written[-1], active_kl)
    return written


def plot_validation(run_dir: str) -> str | None:
    """validation.png: each training loss term (log.csv) with its held-out counterpart (val.csv); None without val.csv."""
    val_path, train_path = os.path.join(run_dir, "val.csv"), os.path.join(run_dir, "log.csv")
    if not (os.path.exists(val_path) and os.path.exists(train_path)):
        return None
    held, train = read_log(val_path), read_log(train_path)
    if not held.get("step"):
        return None
    figure, axis = subplots(figsize=(7, 4), dpi=110)
    for index, name in enumerate(k[4:] for k in held if k.startswith("val_")):
        colour = f"C{index}"
        if name in train:
            axis.plot(train["step"], train[name], color=colour, alpha=0.6, label=f"{name} (training batches)")
        axis.plot(held["step"], held[f"val_{name}"], color=colour, marker="o", linestyle="--",
                  label=f"{name} (held out)")
    axis.set_xlabel("step"), axis.set_ylabel("nats per image"), axis.set_yscale("symlog")
    axis.legend(fontsize=8)
    figure.tight_layout()
    path = os.path.join(run_dir, "validation.png")
    figure.savefig(path)
    return path
