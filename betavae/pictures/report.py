"""The run report: one static predictions/<run>/report.html with params, final losses, metrics and every picture.

No server, scripts or fonts from elsewhere: open the file in a browser. main.py rewrites it at every sample step
and at the end; `python report.py predictions/<run>` rewrites it by hand.
"""
from __future__ import annotations

import datetime
import html
import os
import re
import tempfile

import yaml

from betavae.evaluation.scores import headline
from betavae.pictures import plots

# Pictures named <kind>_stepNNNNNN.png|gif, shown in this order with these captions; kinds not listed come after.
KINDS = {
    "reconstructions": "Inputs (top) over their reconstructions from the posterior mean.",
    "samples": "Decoded draws from the prior z ~ N(0, I); the same draws at every step.",
    "traversal_grid": "Every latent traversed from z = 0, rows sorted by KL to the prior; grey labels: inactive.",
    "traversal_highest_mean": "The original project's traversal: the latent with the highest mean |μ|, over its "
                              "observed range, other latents at 0.",
    "heatmaps": "Mean μ of each active latent over sprite positions (posX, posY), other factors averaged.",
    "factor_means": "Mean μ of each active latent against each other ground-truth factor.",
}
PLOTS = {
    "losses.png": "Loss terms over steps; the β or C schedule on the second axis.",
    "kl_per_dim.png": "KL per latent dimension over steps, with the β or C schedule.",
    "kl_final.png": "KL per dimension at the last logged step; grey bars are below the activity threshold.",
}
# Published figures each metric compares with (docs/references.md): Lin et al. 2020 (InfoGAN-CR, ICML 2020),
# Table 1, each paper's best on dSprites; and Dubois et al. 2019 (poster), Table 1, dSprites.
# Metrics without a published figure on the same protocol (MMIG, the histogram AAM/MMIG, SAP, DCI completeness,
# informativeness) have none. MIG is disentanglement_lib's; β-TCVAE's 0.45 is Chen's MIG and is left out.
PUBLISHED = {
    "factor_vae": "VAE 0.63 ± 0.06, β-VAE 0.63 ± 0.10, β-TCVAE 0.62 ± 0.07, FactorVAE 0.82 (dSprites; InfoGAN-CR Table 1)",
    "dci_disentanglement": "VAE 0.30 ± 0.10, β-VAE 0.41 ± 0.11, β-TCVAE 0.29 ± 0.10, FactorVAE re-runs 0.67–0.74 "
                           "(dSprites; InfoGAN-CR Table 1)",
    "mig": "VAE 0.10, β-VAE 0.21, FactorVAE 0.15, FactorVAE re-runs 0.27–0.43 (dSprites; InfoGAN-CR Table 1)",
    "beta_vae": "FactorVAE re-runs 0.79–0.85 (InfoGAN-CR Table 1); β-VAE (β = 4) ≈ 0.99, VAE ≈ 0.62 (Higgins et al. "
                "2017, approx.; dSprites)",
    "aam": "VAE 0.20, β-VAE (β = 4) 0.65, β-VAE (β = 50) 0.08, capacity β-VAE 0.12, FactorVAE 0.87 (dSprites; Dubois "
           "et al. 2019, Table 1)",
}
PUBLISHED_STEPS = 300_000  # the training length behind every figure in PUBLISHED (Locatello et al. 2019's protocol)
DETAILS = ("protocol", "samples", "seconds", "representation", "skipped", "sampling", "binned")  # folded below the table
STEPPED = re.compile(r"^(?P<kind>[A-Za-z0-9_]+?)_step(?P<step>\d+)\.(?:png|gif)$")
STYLE = """body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}
img{max-width:100%;image-rendering:pixelated;border:1px solid #ddd}figure{margin:1em 0}
figcaption{font-size:13px;color:#555}.older{font-size:12px;color:#777}code{font-size:12px}
.warning{background:#fff4d6;border-left:4px solid #e0a800;padding:4px 8px}"""


def stepped_pictures(run_dir: str) -> dict[str, list[tuple[int, str]]]:
    """{kind: [(step, file name), ...] by step}, known kinds first, PNG before GIF within a step."""
    found: dict[str, list[tuple[int, str]]] = {}
    for name in sorted(os.listdir(run_dir)):
        match = STEPPED.match(name)
        if match:
            found.setdefault(match["kind"], []).append((int(match["step"]), name))
    order = [k for k in KINDS if k in found] + sorted(k for k in found if k not in KINDS)
    return {k: sorted(found[k], key=lambda item: (item[0], item[1].endswith(".gif"))) for k in order}


def _table(rows: list[tuple[str, object]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _flatten(mapping: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        rows += _flatten(value, name + ".") if isinstance(value, dict) else [(name, value)]
    return rows


def metrics_html(metrics: dict) -> str:
    """One row per metric at the latest step (name, value, published figure), and a <details> element with the
    protocol, sample counts and timings. `metrics` is metrics.yaml: {step: {metric: value, samples: {...},
    seconds: {...}, protocol: "..."}}; a mapping not keyed by step is read as one step's record."""
    steps = [k for k in metrics if isinstance(k, int)]
    latest = max(steps) if steps else None
    record = metrics[latest] if steps else metrics
    record = record if isinstance(record, dict) else {}
    rows = _flatten({k: v for k, v in record.items() if k not in DETAILS})
    shown = headline(dict(rows))  # each metric's headline keys; the others (per factor, per pair) fold below
    every = [(name, value) for name, value in rows if name not in shown] if shown else []
    rows = [(name, value) for name, value in rows if name in shown] if shown else rows
    heading = f"<p>At step {latest}.</p>" if latest is not None else ""
    shorter = latest is not None and latest < PUBLISHED_STEPS and any(name in PUBLISHED for name, _ in rows)
    if shorter:
        heading += (f"<p class='warning'>The published figures are for models trained {PUBLISHED_STEPS:,} steps; "
                    f"these scores are at step {latest:,} and do not compare with them.</p>")
    mark = f" [{PUBLISHED_STEPS // 1000}k steps; this run: {latest:,}]" if shorter else ""
    cells = "".join(f"<tr><th>{html.escape(str(name))}</th><td>{html.escape(str(value))}</td>"
                    f"<td>{html.escape(PUBLISHED[name] + mark if name in PUBLISHED else '—')}</td></tr>"
                    for name, value in rows)
    table = f"<table class='metrics'><tr><th>metric</th><th>value</th><th>published</th></tr>{cells}</table>"
    extra = _flatten({k: record[k] for k in DETAILS if k in record})
    if latest is not None and len(steps) > 1:
        extra += [(f"earlier step {step}", ", ".join(f"{n} {v}" for n, v in _flatten(
            {k: v for k, v in metrics[step].items() if k not in DETAILS}))) for step in sorted(steps)[:-1]
            if isinstance(metrics[step], dict)]
    details = f"<details><summary>protocol, sample counts and timings (s)</summary>{_table(extra)}</details>" \
        if extra else ""
    if every:
        details += f"<details><summary>every other score ({len(every)})</summary>{_table(every)}</details>"
    return heading + table + details


def _read_yaml(path: str) -> dict:
    """A YAML mapping, or {} when the file is missing or unreadable (a report never stops a run)."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _figure(name: str, caption: str) -> str:
    source = html.escape(name, quote=True)
    return f'<figure><img src="{source}" alt="{source}"><figcaption>{html.escape(caption)} <code>{source}</code>' \
           f"</figcaption></figure>"


def build_report(run_dir: str) -> str:
    """The report's HTML; every src and href is a file in run_dir, by relative name."""
    record = _read_yaml(os.path.join(run_dir, "params.yaml"))
    title = html.escape(os.path.basename(os.path.abspath(run_dir)))
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{STYLE}</style></head>",
             f"<body><h1>{title}</h1><p>Updated {datetime.datetime.now():%Y-%m-%d %H:%M:%S}.</p>"]
    if record:
        about = [(k, record[k]) for k in ("command", "source", "git_commit", "device") if k in record]
        about += _flatten(record.get("versions", {}), "version ")
        parts += ["<h2>Run</h2>", _table(about)]

    log_path = os.path.join(run_dir, "log.csv")
    columns = plots.read_log(log_path) if os.path.isfile(log_path) else {}
    if columns.get("step"):
        last = [("step", int(columns["step"][-1]))]
        last += [(k, f"{columns[k][-1]:.4g}") for k in plots.loss_columns(columns) + list(plots.SCHEDULES) if k in columns]
        kl = plots.kl_columns(columns)
        if kl:
            last.append(("KL per dim (nats)", "  ".join(f"z{k[3:]} {columns[k][-1]:.3f}" for k in kl)))
        parts += ["<h2>Last logged losses</h2>", _table(last)]

    metrics = _read_yaml(os.path.join(run_dir, "metrics.yaml"))
    if metrics:
        parts += ["<h2>Metrics</h2>", metrics_html(metrics), '<p><a href="metrics.yaml">metrics.yaml</a></p>']

    parts.append("<h2>Pictures</h2>")
    for kind, files in stepped_pictures(run_dir).items():
        latest = files[-1][0]
        parts.append(f"<h3>{html.escape(kind.replace('_', ' '))} — step {latest}</h3>")
        parts += [_figure(name, KINDS.get(kind, "")) for step, name in files if step == latest]
        older = [f'<a href="{html.escape(name, quote=True)}">{step}</a>' for step, name in files if step != latest]
        if older:
            parts.append(f"<p class='older'>earlier steps: {' · '.join(older)}</p>")

    shown = [name for name in PLOTS if os.path.isfile(os.path.join(run_dir, name))]
    if shown:
        parts.append("<h2>Training log</h2>" + "".join(_figure(name, PLOTS[name]) for name in shown))
        parts.append('<p><a href="log.csv">log.csv</a></p>')
    if record.get("params"):
        parts += ["<h2>Params</h2>", _table(list(record["params"].items())), '<p><a href="params.yaml">params.yaml</a></p>']
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(run_dir: str) -> str:
    """Write run_dir/report.html atomically (a browser reloading mid-write sees the old or the new page); returns its path."""
    path = os.path.join(run_dir, "report.html")
    handle, temporary = tempfile.mkstemp(dir=run_dir, suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 would hide the report from a group
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(build_report(run_dir))
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def refresh(run_dir: str, active_kl: float = 0.01) -> str:
    """Redraw the log plots, then rewrite the report; what main.py calls at each sample step and at the end."""
    plots.plot_log(os.path.join(run_dir, "log.csv"), run_dir, active_kl)
    return write_report(run_dir)


def active_kl_of(run_dir: str) -> float:
    """The run's active_kl from its params.yaml (0.01 when it has none)."""
    return float(_read_yaml(os.path.join(run_dir, "params.yaml")).get("params", {}).get("active_kl", 0.01))
