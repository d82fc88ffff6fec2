"""A sweep's comparison from its run folders alone: sweep.csv, summary.md, tradeoff.png and sweep.html
(byte-identical rebuilds)."""
from __future__ import annotations

import csv
import glob
import html
import os
import re
import urllib.parse

import numpy as np
import yaml

from betavae.evaluation.published import SWEEP_FIGURES, measured
from betavae.evaluation.scores import headline
from betavae.pictures.plots import subplots
from betavae.pictures.report import STYLE

# main.train's line, or train_pack's (aggregate model-steps/s of a pack of K: each model ran at 1/K of it).
TRAINED = re.compile(r"trained (\d+) steps in ([\d.]+) s(?: in a pack of (\d+))?: ([\d.]+) (?:model-)?steps/s")


COLUMNS = 3  # panels per row of tradeoff.png
# Units shown in sweep.html's headers (sweep.csv keeps the bare keys); scores without one are unitless, mostly in [0, 1].
UNITS = {"recon": "nats", "kl": "nats", "steps_per_s": "steps/s", "wall_s": "s", "gaussian_total_correlation": "nats",
         "mutual_info_score": "nats", "active_latents": "count"}


def heading(column: str) -> str:
    """A column's header in sweep.html: its key, with its unit where it has one."""
    bare = column.removesuffix(" published")
    unit = UNITS.get(bare.removeprefix("sampled_"))
    return f"{column} ({unit})" if unit else column


def read_point(folder: str, active_kl: float) -> dict:
    """Final recon/KL (log.csv), the headline keys of the last metrics (metrics.yaml; every key stays there), UDR
    (udr.yaml), active latents, speed (run.log), status."""
    row = {}
    log = os.path.join(folder, "log.csv")
    if os.path.isfile(log):
        with open(log) as f:
            rows = list(csv.DictReader(f))
        if rows:
            last = rows[-1]
            row["step"] = int(last["step"])
            row["recon"], row["kl"] = float(last["recon"]), float(last["kl"])
            row["active_latents"] = sum(float(v) > active_kl for k, v in last.items() if re.fullmatch(r"kl_\d+", k))
    scores = os.path.join(folder, "metrics.yaml")
    if os.path.isfile(scores):
        with open(scores) as f:
            record = yaml.safe_load(f) or {}
        if record:
            final = record[max(record)]
            row.update({k: float(v) for k, v in headline(final).items() if numeric([v])})
    udr = os.path.join(folder, "udr.yaml")
    if os.path.isfile(udr):
        with open(udr) as f:
            row.update({k: float(v) for k, v in (yaml.safe_load(f) or {}).items() if k.startswith("udr_")})
    run_log = os.path.join(folder, "run.log")
    if os.path.isfile(run_log):
        found = TRAINED.findall(open(run_log).read())
        if found:
            row["steps_per_s"] = round(float(found[-1][3]) / int(found[-1][2] or 1), 3)
    status = {}
    if os.path.isfile(os.path.join(folder, "status.yaml")):
        with open(os.path.join(folder, "status.yaml")) as f:
            status = yaml.safe_load(f) or {}
    row["wall_s"] = status.get("wall_s", "")
    row["status"] = status.get("status", "not run")
    row["reason"] = status.get("reason", "")
    return row


def fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def read_sweep_spec(sweep_dir: str) -> dict:
    with open(os.path.join(sweep_dir, "sweep.yaml")) as f:
        return yaml.safe_load(f)


def collect(sweep_dir: str) -> tuple[list[str], list[dict], list[str]]:
    """(varying keys, one row per point in sweep.yaml order, metric columns)."""
    spec = read_sweep_spec(sweep_dir)
    keys = sorted(list(spec["grid"]) + [k for group in spec["zip"] for k in group], key=lambda k: k == "seed")
    active_kl = spec["base"].get("active_kl", 0.01)
    rows = []
    for entry in spec["points"]:
        row = {"point": entry["name"], **{k: entry["overrides"].get(k, "") for k in keys}}
        row.update(read_point(os.path.join(sweep_dir, entry["name"]), active_kl))
        rows.append(row)
    fixed = set(keys) | {"point", "step", "recon", "kl", "active_latents", "steps_per_s", "wall_s", "status",
                         "reason"}
    metrics = sorted({k for r in rows for k in r} - fixed)
    return keys, rows, metrics


def fmt_short(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def numeric(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def plot_tradeoff(path: str, keys: list[str], rows: list[dict], metrics: list[str]) -> None:
    """One panel per quantity against the first numeric non-seed swept param, mean ± std over the rest; the panels
    fill rows of COLUMNS, so each stays readable however many metrics there are."""
    swept = [k for k in keys if k != "seed" and len({str(r[k]) for r in rows}) > 1]
    x_key = next((k for k in swept if numeric([r[k] for r in rows])), swept[0] if swept else None)
    line_key = next((k for k in swept if k != x_key), None)
    quantities = ["recon", "kl"] + metrics
    columns = min(COLUMNS, len(quantities))
    rows_of_panels = -(-len(quantities) // columns)
    fig, axes = subplots(rows_of_panels, columns, figsize=(4.2 * columns, 3.4 * rows_of_panels), squeeze=False)
    for ax in axes.flat[len(quantities):]:
        ax.set_visible(False)
    for ax, quantity in zip(axes.flat, quantities):
        for line in sorted({r[line_key] for r in rows} if line_key else {None}, key=str):
            subset = [r for r in rows if (line_key is None or r[line_key] == line) and quantity in r]
            xs = sorted({r[x_key] for r in subset}, key=lambda v: (str(type(v)), v)) if x_key else [0]
            if not xs:
                continue
            values = [[r[quantity] for r in subset if x_key is None or r[x_key] == x] for x in xs]
            mean, std = np.array([np.mean(v) for v in values]), np.array([np.std(v) for v in values])
            label = f"{line_key}={fmt_short(line)}" if line_key else None
            if x_key and numeric(xs):  # a numeric axis: a line with its ± std band
                ax.plot(xs, mean, marker="o", label=label)
                ax.fill_between(xs, mean - std, mean + std, alpha=0.2)
            else:  # categories (false, bf16): points with ± std bars, never joined by a line
                ax.errorbar(range(len(xs)), mean, yerr=std, fmt="o", capsize=3, label=label)
                ax.set_xticks(range(len(xs)), [str(x).lower() if isinstance(x, bool) else fmt_short(x) for x in xs])
                ax.set_xlim(-0.5, len(xs) - 0.5)
        xs_all = [r[x_key] for r in rows] if x_key else []
        if xs_all and numeric(xs_all) and min(xs_all) > 0 and max(xs_all) > 10 * min(xs_all):
            ax.set_xscale("log")
        ax.set_title(quantity)
        ax.set_xlabel(x_key or "")
        if line_key:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})


def summarise(keys: list[str], rows: list[dict], metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    """One row per setting (the swept params other than seed): n finished points and, per quantity, the mean ±
    sample std (ddof = 1) over them with the [min, max] range, so the worst seed shows either way."""
    group_keys = [k for k in keys if k != "seed"]
    quantities = ["recon", "kl", *metrics, "active_latents"]
    settings: dict[tuple, list[dict]] = {}
    for r in rows:
        settings.setdefault(tuple(fmt_short(r[k]) for k in group_keys), []).append(r)
    header = [*group_keys, "n", *quantities]
    table = []
    for setting, members in settings.items():
        done = [r for r in members if r["status"] == "done"]
        cells = [*setting, f"{len(done)}/{len(members)}"]
        for quantity in quantities:
            values = np.array([float(r[quantity]) for r in done if quantity in r])
            if len(values) == 0:
                cells.append("")
                continue
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            cells.append(f"{values.mean():.3g} ± {std:.2g} [{values.min():.3g}, {values.max():.3g}]")
        table.append(cells)
    return header, table


def with_published(sweep: str | None, steps, header: list[str], table: list[list[str]], estimator: str = "quadrature"
                   ) -> tuple[list[str], list[list[str]], list[str]]:
    """The summary with a '<quantity> published' column beside each quantity the sweep preset `sweep` has published
    figures for (published.SWEEP_FIGURES; '—' where a setting has none), and the notes that say where each figure
    comes from and which protocol each number follows. Unchanged, with no notes, for a sweep without figures."""
    figures = SWEEP_FIGURES.get(sweep or "")
    if figures is None:
        return header, table, []
    shown = [q for q in header if any(q in values for _, values in figures["settings"])]
    new_header, new_table = [], [[] for _ in table]
    for column, name in enumerate(header):
        new_header.append(name)
        for row, new_row in zip(table, new_table):
            new_row.append(row[column])
        if name not in shown:
            continue
        new_header.append(f"{name} published")
        for row, new_row in zip(table, new_table):
            match = [values for setting, values in figures["settings"]
                     if all(k in header and row[header.index(k)] == fmt_short(v) for k, v in setting.items())]
            new_row.append(match[0].get(name, "—") if match else "—")
    notes = [f"Published: {figures['source']}. {figures['note']}"]
    notes += [f"Protocol of `{q}`: measured here, {measured(q, estimator)}; published, "
              f"{figures['protocol'].get(q, 'as its source states')}." for q in shown]
    trained = f"{steps:,}" if isinstance(steps, int) else str(steps)
    notes.append(f"Measured: this sweep's models after {trained} steps each, mean ± std over their seeds.")
    return new_header, new_table, notes


def write_summary(path: str, header: list[str], table: list[list[str]], notes: list[str] = ()) -> None:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    with open(path, "w") as f:
        f.write("Mean ± std over the finished seeds of each setting (sample std, ddof = 1), [min, max]; "
                "n = finished/all.\n\n" + "\n".join(lines) + "\n" + "".join(f"\n{note}\n" for note in notes))


def newest(folder: str, prefix: str) -> str | None:
    found = sorted(glob.glob(os.path.join(folder, f"{prefix}_step*.png")))
    return os.path.basename(found[-1]) if found else None


def write_report(sweep_dir: str) -> None:
    keys, rows, metrics = collect(sweep_dir)
    columns = ["point", *keys, "recon", "kl", *metrics, "active_latents", "steps_per_s", "wall_s", "status", "reason"]
    with open(os.path.join(sweep_dir, "sweep.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([[fmt(r.get(c, "")) for c in columns] for r in rows])
    spec = read_sweep_spec(sweep_dir)
    summary_header, summary, notes = with_published(spec.get("sweep"), spec["base"].get("steps"),
                                                    *summarise(keys, rows, metrics),
                                                    spec["base"].get("aam_estimator", "quadrature"))
    write_summary(os.path.join(sweep_dir, "summary.md"), summary_header, summary, notes)
    plot_tradeoff(os.path.join(sweep_dir, "tradeoff.png"), keys, rows, metrics)
    link = lambda *parts: html.escape(urllib.parse.quote("/".join(parts), safe="/=,"))  # noqa: E731
    table = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(r.get(c, '')))}</td>" for c in columns) + "</tr>\n"
                    for r in rows)
    order = sorted(rows, key=lambda r: tuple((0, r[k], "") if numeric([r[k]]) else (1, 0, str(r[k])) for k in
                                             [k for k in keys if k != "seed"] + [k for k in keys if k == "seed"]))
    gallery = []
    for r in order:
        folder = os.path.join(sweep_dir, r["point"])
        cells = [f"<h3><a href=\"{link(r['point'], 'report.html')}\">{html.escape(r['point'])}</a></h3>"
                 if os.path.isfile(os.path.join(folder, "report.html")) else f"<h3>{html.escape(r['point'])}</h3>"]
        for prefix in ("traversal_grid", "traversal_highest_mean"):
            image = newest(folder, prefix)
            if image:
                cells.append(f"<img src=\"{link(r['point'], image)}\" alt=\"{prefix}\" style=\"max-width:48%\">")
        gallery.append("<div>" + "\n".join(cells) + "</div>")
    page = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>sweep</title>"
            f"<style>{STYLE}</style></head><body>\n"
            f"<h1>Sweep {html.escape(os.path.basename(os.path.abspath(sweep_dir)))}</h1>\n"
            "<table><tr>" + "".join(f"<th>{html.escape(heading(c))}</th>" for c in columns) + "</tr>\n"
            + table + "</table>\n<p><a href=\"sweep.csv\">sweep.csv</a></p>\n"
            "<h2>Per setting: mean ± std over seeds [min, max]</h2>\n"
            "<table><tr>" + "".join(f"<th>{html.escape(heading(c))}</th>" for c in summary_header)
            + "</tr>\n" + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>\n"
                                   for row in summary) + "</table>\n"
            + "".join(f"<p>{html.escape(note).replace('`', '')}</p>\n" for note in notes)
            + "<img src=\"tradeoff.png\" alt=\"tradeoff\">\n"
            "<h2>Traversals (grid, highest-|mean| latent)</h2>\n" + "\n".join(gallery) + "\n</body></html>\n")
    with open(os.path.join(sweep_dir, "sweep.html"), "w") as f:
        f.write(page)

