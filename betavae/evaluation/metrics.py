"""The entry point of the metrics: score a model on a dataset with the metrics a run selects, and record the scores.

Each metric is one module of betavae/evaluation/scores/ with one registry entry (`scores.REGISTRY`); the `metrics`
param selects them by name or group (`default`: the six of Locatello et al. 2019's study, BetaVAE, FactorVAE, MIG,
DCI, Modularity and SAP, with the unsupervised scores; `all`: every one). They share one `Context` per
representation: one draw of uniform points encoded once, classifiers that two protocols fit on the same points
fitted once, a thread per core. Protocols follow google-research's disentanglement_lib (Locatello et al. 2019)
unless a metric's docstring says otherwise; sample counts are in protocol.SAMPLES. Scores are deterministic given
the seed: each metric draws from its own random stream.
"""
from __future__ import annotations

import os
import tempfile
import time
from typing import Callable

import yaml

from betavae.evaluation import protocol, sampling, scores as registry
from betavae.evaluation.codes import DatasetCodes  # noqa: F401  (the metrics' one door)
from betavae.errors import UserError
from betavae.evaluation.context import Context, Skip
from betavae.evaluation.protocol import sample_factors  # noqa: F401
from betavae.evaluation.scores.aam_mmig import (aam, aam_from_information, aam_histogram, mmig,  # noqa: F401
                                                mmig_from_information, mmig_histogram, mmig_uniform,
                                                posterior_information)
from betavae.evaluation.scores.beta_vae import beta_vae_score  # noqa: F401
from betavae.evaluation.scores.dci import dci, dci_from_importance  # noqa: F401
from betavae.evaluation.scores.factor_vae import factor_vae_score  # noqa: F401
from betavae.evaluation.scores.mig import mig  # noqa: F401
from betavae.evaluation.scores.sap import sap  # noqa: F401

PROTOCOL = ("disentanglement_lib (Locatello et al. 2019) study configs; AAM/MMIG: Dubois et al. poster Eq. 2-3 with "
            "I from q(z|x) by quadrature of the posterior mixtures (aam_estimator: quadrature) or as the poster's code "
            "estimates it (published); aam_histogram/mmig_histogram: the same equations on MIG's histogram "
            "estimate; docs/metrics.md")
REPRESENTATIONS = ("mean", "sampled", "both")


def selected(metrics="default", include_dci: bool = True, include_beta_vae: bool = True) -> tuple[str, ...]:
    """The registry names a selection runs, less DCI and BetaVAE when their switches are off."""
    left_out = ({"dci"} if not include_dci else set()) | ({"beta_vae"} if not include_beta_vae else set())
    return tuple(name for name in registry.select(metrics) if name not in left_out)


def evaluate(model, dataset, seed: int = 0, include_dci: bool = True, progress: bool = True,
             include_beta_vae: bool = True, metrics="default", representation: str = "mean",
             aam_estimator: str = "quadrature") -> dict:
    """Every selected score of a model on a dataset, the seconds each took, the metrics skipped and why, and how
    each drew its images (`sampling.describe`). `representation`: `mean` (μ, keys as they are), `sampled`
    (μ + σ·ε, keys prefixed `sampled_`) or `both`."""
    codes, sampler = DatasetCodes(model, dataset, progress=progress), sampling.sampler_for(dataset)
    names = selected(metrics, include_dci, include_beta_vae)
    if representation != "mean" and not codes.has_posterior:
        raise UserError(f"representation '{representation}' samples from q(z|x), but the representation given "
                        f"returns codes only; return (mu, logvar) from it, or score representation='mean'.")
    values, seconds, skipped, ran = {}, {}, {}, {}
    for mode in (("mean", "sampled") if representation == "both" else (representation,)):
        prefix = "" if mode == "mean" else "sampled_"
        context = Context(codes if mode == "mean" else codes.sampler(seed), sampler, seed,
                          factor_sizes=getattr(dataset, "factor_sizes", None),
                          factor_names=getattr(dataset, "factor_names", None),
                          posterior=codes.posterior if codes.has_posterior else None,
                          grid=sampler.mode == "grid", progress=progress, options={"aam_estimator": aam_estimator})
        for name in names:
            metric = registry.REGISTRY[name]
            why = context.missing(metric.needs)
            if why is None and f"{prefix}encode_fixed_points" not in seconds:
                started = time.perf_counter()
                context.points()
                seconds[f"{prefix}encode_fixed_points"] = time.perf_counter() - started
            started = time.perf_counter()
            try:
                if why is not None:
                    raise Skip(f"{name} {why}")
                result = metric.compute(context)
            except Skip as reason:
                skipped[name] = str(reason)
                continue
            except Exception as error:  # one metric's failure never costs the others their scores
                skipped[name] = f"{name} failed ({type(error).__name__}: {error})"
                continue
            seconds[prefix + name] = time.perf_counter() - started
            values.update({prefix + key: round(float(value), 4) for key, value in result.items()})
            ran[name] = metric
    return {**values, "representation": representation, "seconds": {k: round(v, 1) for k, v in seconds.items()},
            **({"skipped": skipped} if skipped else {}), **sampling.describe(sampler, dataset, ran)}


def has_factors(dataset) -> bool:
    """Datasets with ground truth (dSprites) expose factor_sizes; CelebA does not."""
    return getattr(dataset, "factor_sizes", None) is not None


def write_scores(path: str, step: int, scores: dict) -> None:
    """Add the scores of `step` to the YAML file at `path` (keyed by step, protocol named); written atomically."""
    record = {}
    if os.path.exists(path):
        with open(path) as f:
            record = yaml.safe_load(f) or {}
    record[int(step)] = {"protocol": PROTOCOL, "samples": dict(protocol.SAMPLES), **scores}
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 would hide the scores from a group
    with os.fdopen(handle, "w") as f:
        yaml.safe_dump(dict(sorted(record.items())), f, sort_keys=False)
    os.replace(temporary, path)


def record_run(model, dataset, folder: str, step: int, params, say: Callable[[str], object] = print) -> dict | None:
    """`record` with a run's own choices: its seed, metrics, metrics_dci, metrics_beta_vae and representation."""
    return record(model, dataset, folder, step, params.seed, params.metrics_dci, say,
                  include_beta_vae=params.metrics_beta_vae, metrics=params.metrics,
                  representation=params.metrics_representation, aam_estimator=params.aam_estimator)


def record(model, dataset, folder: str, step: int, seed: int = 0, include_dci: bool = True,
           say: Callable[[str], object] = print, include_beta_vae: bool = True, metrics="default",
           representation: str = "mean", aam_estimator: str = "quadrature") -> dict | None:
    """Compute the scores for `step`, add them to folder/metrics.yaml and say one line, plus one line per reason
    a selected metric was skipped (a dataset without factors gets the scores that need none)."""
    if not selected(metrics, include_dci, include_beta_vae):
        return None
    scores = evaluate(model, dataset, seed, include_dci, include_beta_vae=include_beta_vae, metrics=metrics,
                      representation=representation, aam_estimator=aam_estimator)
    reasons: dict[str, list[str]] = {}
    for name, why in scores.get("skipped", {}).items():
        reasons.setdefault(why.removeprefix(name).strip(), []).append(name)
    for why, names in reasons.items():
        say(f"metrics skipped: {', '.join(names)}: {why}" if not why.startswith("failed")
            else f"metric {names[0]} {why}; the other scores are kept")
    if not any(isinstance(v, float) for v in scores.values()):
        return None
    path = os.path.join(folder, "metrics.yaml")
    first = not os.path.exists(path)  # how the scores drew their images is said once, with a run's first scores
    write_scores(path, step, scores)
    values = " ".join(f"{k} {v:.3f}" for k, v in registry.headline(scores).items())
    say(f"metrics at step {step}: {values} ({sum(scores['seconds'].values()):.0f} s); in {folder}/metrics.yaml"
        + (f"; {sampling.summary(scores)}" if first else ""))
    return scores
