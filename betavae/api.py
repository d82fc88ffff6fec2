"""The library's front door (docs/api.md): score any representation on any dataset of this repository with the
metrics of disentanglement_lib's study and the others here, and open checkpoints (this repository's, or released
models of other projects) as a `VAE` whose encoder and decoder run from Python. Works from any folder once the
package is installed (`pip install -e .`); nothing here imports the clone's scripts."""
from __future__ import annotations

import os
import types
from typing import Callable

from betavae.errors import UserError

# The data options a dataset builder reads, at the defaults params.py gives them (tests/test_api.py checks).
DATA_OPTIONS = {"data_dir": "data", "data_seed": 0, "celeba_crop": 148, "celeba_loader": "cache", "num_workers": 4,
                "download": False, "val_images": 5000}


def open_dataset(dataset="dsprites", device="cpu", **options):
    """A dataset of this repository by registry name or .npz path (docs/data.md), or a dataset object, returned as
    it is. `options` override DATA_OPTIONS (e.g. data_dir="~/data"). DataError when its files are missing."""
    if not isinstance(dataset, (str, os.PathLike)):
        return dataset
    from betavae.sources.interface import make_dataset

    unknown = sorted(set(options) - set(DATA_OPTIONS))
    if unknown:
        raise UserError(f"Unknown data option(s) {', '.join(unknown)}; choose from {', '.join(DATA_OPTIONS)}.")
    return make_dataset(types.SimpleNamespace(dataset=os.fspath(dataset), **{**DATA_OPTIONS, **options}), device)


def score(representation: Callable, dataset="dsprites", *, metrics="default", seed: int = 0, kind: str = "mean",
          out: str | None = None, step: int = 0, progress: bool = True, aam_estimator: str = "quadrature",
          **options) -> dict:
    """The scores of `representation` on `dataset`, as one step of metrics.yaml holds them.

    representation: a VAE (from `load_model`), or any callable from images float32 [B, C, 64, 64] in [0, 1] (a
    CPU tensor) to codes [B, D] (tensor or array), or to (μ, log σ²) [B, D] each for the metrics that need the
    posterior (AAM/MMIG) and for kind="sampled"; a callable returning codes only gets every other metric.
    dataset: a registry name, an .npz path or a dataset object; `options` as in `open_dataset`.
    metrics: default | all | names joined by commas (docs/metrics.md). kind: mean | sampled | both.
    out: a folder; when given, the scores are added to out/metrics.yaml under `step`, as a run records them.
    aam_estimator: quadrature | published, how AAM and MMIG estimate I (docs/metrics.md)."""
    from betavae.evaluation import metrics as evaluation, protocol

    if kind not in evaluation.REPRESENTATIONS:
        raise UserError(f"kind '{kind}' is not one of {', '.join(evaluation.REPRESENTATIONS)}.")
    if aam_estimator not in ("quadrature", "published"):
        raise UserError(f"aam_estimator '{aam_estimator}' is not one of quadrature, published.")
    data = open_dataset(dataset, **options)
    was_training = getattr(representation, "training", False)
    if hasattr(representation, "eval"):
        representation.eval()
    try:
        scores = evaluation.evaluate(representation, data, seed, progress=progress, metrics=metrics,
                                     representation=kind, aam_estimator=aam_estimator)
    finally:
        if was_training:
            representation.train()
    if out is not None:
        os.makedirs(out, exist_ok=True)
        evaluation.write_scores(os.path.join(out, "metrics.yaml"), step, scores)
    return {"protocol": evaluation.PROTOCOL, "samples": dict(protocol.SAMPLES), **scores}


def load_checkpoint(path: str) -> dict:
    """The checkpoint at `path` as main.py writes it: a run folder or checkpoint.pt, a disentangling-vae results
    folder (model.pt + specs.json) or a 1Konny/Beta-VAE checkpoint (betavae/released.py); loaded weights-only."""
    from betavae.released import open_checkpoint

    return open_checkpoint(os.fspath(path))[0]


def load_model(path: str, device="cpu"):
    """The VAE (betavae/network.py) of the checkpoint at `path`, in eval mode on `device`:
    `model.encoder(x)` → (μ, log σ²), `torch.sigmoid(model.decoder(z))` → images (Bernoulli means)."""
    from betavae.checkpoints import model_from_checkpoint

    return model_from_checkpoint(load_checkpoint(path)).to(device).eval()
