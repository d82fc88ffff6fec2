"""Disentanglement metrics on ground-truth factors, each on the protocol of its reference implementation.

Scores on fixed arrays take `codes` [N, D] float (the encoder mean μ) and `factors` [N, K] integer classes.
The two sampling metrics take a representation function (factor classes [N, K] -> codes [N, D]) and the
factor sizes. Metrics that sample or fit a classifier take a seed and are deterministic given it; the
histogram metrics (MIG, aam_histogram, mmig_histogram) are deterministic functions of their arrays. AAM and
MMIG by default use the poster's estimator of I[z_j; v_k] from the Gaussian posteriors q(z|x)
(`posterior_information`). Protocols follow google-research's
disentanglement_lib (Locatello et al. 2019) unless a docstring says otherwise; sample counts are in protocol.SAMPLES.
"""
from __future__ import annotations

import copy
import os
import tempfile
import time
from typing import Callable

import numpy as np
import torch
import yaml
from tqdm import tqdm

from betavae.evaluation import protocol, sampling
from betavae.evaluation.information import (aam, aam_from_information, aam_histogram, mig, mmig,  # noqa: F401
                                            mmig_from_information, mmig_histogram, mmig_uniform, posterior_information)
from betavae.evaluation.predictors import beta_vae_score, dci, dci_from_importance, factor_vae_score, sap  # noqa: F401
from betavae.evaluation.protocol import sample_factors  # noqa: F401  (re-exported: the metrics' one door)

# ---------------------------------------------------------------- a trained model on dSprites

class DatasetCodes:
    """Representation function of a model on a dataset with factors: keys → μ [N, D]. The keys are factor classes
    [N, K] on a complete grid (dSprites), dataset rows [N] otherwise (a dataset with `complete_grid` False).

    Codes are cached per image: the protocols draw ~2.9 million factor combinations from dSprites'
    737,280 images, so each image is rendered and encoded at most once, in batches.
    """

    def __init__(self, model, dataset, batch_size: int | None = None, progress: bool = True):
        self.model, self.dataset, self.progress = model, dataset, progress
        on_cpu = next(model.parameters()).device.type == "cpu"
        self.batch_size = batch_size or (128 if on_cpu else 4096)  # see _encode for the CPU figure
        self.by_row = not getattr(dataset, "complete_grid", True)
        sizes = np.array(dataset.factor_sizes, dtype=np.int64)
        self.strides = np.array([int(np.prod(sizes[k + 1:])) for k in range(len(sizes))], dtype=np.int64)
        count = len(dataset) if self.by_row else int(np.prod(sizes))
        self.codes = np.zeros((count, model.latent_dim), dtype=np.float32)
        self.logvars = np.zeros_like(self.codes)  # log σ² of q(z|x), for the poster's estimator (`posterior`)
        self.known = np.zeros(len(self.codes), dtype=bool)

    def _rows(self, keys: np.ndarray) -> np.ndarray:
        keys = np.asarray(keys, dtype=np.int64)
        return keys if self.by_row else keys @ self.strides

    def __call__(self, keys: np.ndarray) -> np.ndarray:
        rows = self._rows(keys)
        missing = np.unique(rows[~self.known[rows]])
        if missing.size:
            self._encode(missing)
        return self.codes[rows]

    def posterior(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The Gaussian posterior of each key's image: (μ, log σ²), each [N, D]; same cache as `__call__`."""
        self(keys)
        rows = self._rows(keys)
        return self.codes[rows], self.logvars[rows]

    def _images(self, rows: torch.Tensor) -> torch.Tensor:
        if self.by_row:
            return self.dataset.batch(rows)[0]
        factors = (rows[:, None] // torch.from_numpy(self.strides)) % torch.tensor(self.dataset.factor_sizes)
        classes = torch.cat([torch.zeros(len(rows), 1, dtype=torch.int64), factors], dim=1)  # colour 0 first
        return self.dataset.images(classes)

    def _encode(self, rows: np.ndarray) -> None:
        device = next(self.model.parameters()).device
        chunks = torch.from_numpy(rows).split(self.batch_size)
        # Measured on 2 CPU cores: a channels-last copy of the encoder runs ~1.5x faster, and batches of up to
        # ~160 images ~2x faster than 256 or more (16,000 vs 7,500 images/s). The model itself is left as it is.
        encoder = copy.deepcopy(self.model.encoder).eval().to(memory_format=torch.channels_last)
        bar = tqdm(chunks, desc="encoding images", leave=False, disable=not self.progress or len(chunks) < 100)
        with torch.inference_mode():
            for start, chunk in zip(range(0, len(rows), self.batch_size), bar):
                x = self._images(chunk).to(device).contiguous(memory_format=torch.channels_last)
                mu, logvar = encoder(x)  # [B, D] each
                self.codes[rows[start:start + len(chunk)]] = mu.float().cpu().numpy()
                self.logvars[rows[start:start + len(chunk)]] = logvar.float().cpu().numpy()
        self.known[rows] = True


PROTOCOL = ("disentanglement_lib (Locatello et al. 2019) defaults; AAM/MMIG: Dubois et al. poster Eq. 2-3 with I "
            "estimated from q(z|x) by stratified sampling (Chen et al. 2018's MIG code); aam_histogram/mmig_histogram: "
            "the same equations on MIG's histogram estimate")


def evaluate(model, dataset, seed: int = 0, include_dci: bool = True, progress: bool = True,
             include_beta_vae: bool = True) -> dict:
    """Every score of a model on a dataset with ground-truth factors, with the seconds each took (DCI and BetaVAE,
    the slow ones by protocol, can be left out), and how each score drew its images (`sampling.describe`)."""
    representation, sampler = DatasetCodes(model, dataset, progress=progress), sampling.sampler_for(dataset)
    started = time.perf_counter()
    keys = sampler.sample(protocol.rng(seed, "fixed_points"), max(protocol.SAMPLES["mig"], protocol.SAMPLES["split"]))
    codes, factors = representation(keys), sampler.factors(keys)  # 10,000 serve MIG/AAM/MMIG, 15,000 SAP and DCI
    scores, seconds, poster = {}, {"encode_fixed_points": time.perf_counter() - started}, {}
    mig_points, split = protocol.SAMPLES["mig"], protocol.SAMPLES["split"]
    array_metrics = {"mig": lambda: mig(codes[:mig_points], factors[:mig_points]),
                     "aam_histogram": lambda: aam_histogram(codes[:mig_points], factors[:mig_points]),
                     "mmig_histogram": lambda: mmig_histogram(codes[:mig_points], factors[:mig_points]),
                     "poster_information": lambda: poster.update(information=posterior_information(
                         representation.posterior, dataset.factor_sizes, seed, sampler=sampler)),
                     "aam": lambda: aam_from_information(poster["information"]),
                     # H(v_k) = log |V_k| on a full grid; from the observed factors on an incomplete one
                     "mmig": lambda: mmig_uniform(poster["information"], dataset.factor_sizes) if sampler.mode == "grid"
                     else mmig_from_information(poster["information"], factors[:mig_points]),
                     "sap": lambda: sap(codes[:split], factors[:split], seed),
                     "beta_vae": lambda: beta_vae_score(representation, dataset.factor_sizes, seed, sampler=sampler),
                     "factor_vae": lambda: factor_vae_score(representation, dataset.factor_sizes, seed, sampler=sampler)}
    if not include_beta_vae:
        del array_metrics["beta_vae"]
    if include_dci:
        array_metrics["dci"] = lambda: dci(codes[:split], factors[:split], seed, progress)
    for name, compute in array_metrics.items():
        started = time.perf_counter()
        value = compute()
        seconds[name] = time.perf_counter() - started
        if value is None:  # poster_information only fills `poster` for aam and mmig
            continue
        scores.update({f"dci_{k}": v for k, v in value.items()} if isinstance(value, dict) else {name: value})
    return {**{k: round(v, 4) for k, v in scores.items()}, "seconds": {k: round(v, 1) for k, v in seconds.items()},
            **sampling.describe(sampler, dataset, include_dci, include_beta_vae)}


def has_factors(dataset) -> bool:
    """Datasets with ground truth (dSprites) expose factor_sizes; CelebA does not."""
    return hasattr(dataset, "factor_sizes")


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
    """`record` with a run's own choices: its seed, metrics_dci and metrics_beta_vae."""
    return record(model, dataset, folder, step, params.seed, params.metrics_dci, say,
                  include_beta_vae=params.metrics_beta_vae)


def record(model, dataset, folder: str, step: int, seed: int = 0, include_dci: bool = True,
           say: Callable[[str], object] = print, include_beta_vae: bool = True) -> dict | None:
    """Compute the scores for `step`, add them to folder/metrics.yaml and say one line; a dataset without
    ground-truth factors gets a one-line notice instead."""
    if not has_factors(dataset):
        say(f"metrics skipped: {type(dataset).__name__} has no ground-truth factors")
        return None
    scores = evaluate(model, dataset, seed, include_dci, include_beta_vae=include_beta_vae)
    path = os.path.join(folder, "metrics.yaml")
    first = not os.path.exists(path)  # how the scores drew their images is said once, with a run's first scores
    write_scores(path, step, scores)
    values = " ".join(f"{k} {v:.3f}" for k, v in scores.items() if isinstance(v, float))
    say(f"metrics at step {step}: {values} ({sum(scores['seconds'].values()):.0f} s); in {folder}/metrics.yaml"
        + (f"; {sampling.summary(scores)}" if first else ""))
    return scores
