"""How AAM and MMIG move with the estimator of I[z_j; v_k] and its counts, on one model (docs/metrics.md,
"Convergence"): the stratified sampling this repository used before (strata of images per factor value, one z drawn
from each), quadrature on growing uniform sets of images up to the whole dataset, and the estimator as Dubois et al.'s
code computes it. `python traverse.py CHECKPOINT --aam-convergence` prints the table."""
from __future__ import annotations

import time

import numpy as np

from betavae.evaluation import mixture
from betavae.evaluation.codes import DatasetCodes
from betavae.evaluation.scores.aam_mmig import aam_from_information, mmig_uniform, posterior_information
from betavae.evaluation.context import Skip

SAMPLED = ((10_000, 2_000, 256), (10_000, 2_000, 1_024), (50_000, 10_000, 4_096))  # marginal, draws, per value
IMAGES = (10_000, 30_000, 100_000, 300_000)


def rows(model, dataset, seed: int = 0, say=print) -> list[tuple[str, float, float, float]]:
    """(estimator and counts, AAM, MMIG, seconds) for each setting, every image of the grid encoded once."""
    sizes = getattr(dataset, "factor_sizes", None)
    if sizes is None or not getattr(dataset, "complete_grid", True):
        raise Skip("the convergence study needs a dataset whose factor grid is complete (dSprites, Shapes3D, MPI3D)")
    codes = DatasetCodes(model, dataset)
    classes = np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), -1).reshape(-1, len(sizes))
    started = time.perf_counter()
    mu, logvar = codes.posterior(classes)
    say(f"encoded the {len(classes):,} images in {time.perf_counter() - started:.0f} s")
    strides = codes.strides
    posterior = lambda keys: (mu[keys @ strides], logvar[keys @ strides])  # noqa: E731
    found = []

    def add(label, information, started, clamp=False):
        information = np.maximum(information, 0) if clamp else information
        found.append((label, aam_from_information(information), mmig_uniform(information, sizes),
                      time.perf_counter() - started))
        say("| {} | {:.3f} | {:.3f} | {:.0f} |".format(*found[-1]))

    for marginal, draws, per_value in SAMPLED:
        started = time.perf_counter()
        add(f"sampled: q(z) from {marginal:,} images at {draws:,} draws, strata of {per_value:,} per value",
            posterior_information(posterior, sizes, seed, marginal=marginal, draws=draws, per_value=per_value), started)
    rng = np.random.default_rng(seed)
    for count in (count for count in IMAGES if count < len(classes)):
        started = time.perf_counter()
        chosen = rng.choice(len(classes), count, replace=False)
        add(f"quadrature: {count:,} uniform images, 1,024 points",
            mixture.quadrature_information(mu[chosen], logvar[chosen], classes[chosen], sizes), started)
    densities = {}
    for points in (1024, 2048):
        started = time.perf_counter()
        densities[points] = mixture.mixture_densities(mu, logvar, classes, sizes, points)
        add(f"quadrature: every image ({len(classes):,}), {points:,} points",
            mixture.quadrature_information(mu, logvar, classes, sizes, densities=densities[points]), started)
    for draw in range(seed, seed + 5):  # its 10,000 means per entropy are drawn at random: five draws
        started = time.perf_counter()
        add(f"as published (Dubois et al.'s code): every image, 10,000 means per entropy, draw {draw}",
            mixture.published_information(mu, logvar, classes, sizes, draw, densities=densities[1024]), started,
            clamp=True)
    return found


def table(model, dataset, seed: int = 0, say=print) -> list[tuple[str, float, float, float]]:
    """Say the table's header, then each row as it is measured; return the rows."""
    say("| estimator | AAM | MMIG | seconds |\n|---|---|---|---|")
    return rows(model, dataset, seed, say)
