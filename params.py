"""Every knob of a run, its presets, and the layered overrides: preset → YAML file → --set key=value."""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, fields

import yaml

from betavae.errors import DataError, UserError
from betavae.objectives import REGISTRY as OBJECTIVES  # the registry of objectives (torch-free)
from betavae.sources.interface import REGISTRY as DATASET_NAMES  # the registry of datasets (torch-free)


@dataclass
class Params:
    # --- data ---
    dataset: str = "dsprites"          # a name of betavae/sources/interface.py REGISTRY | PATH.npz (docs/data.md)
    data_dir: str = "data"             # folder searched for dataset files (dSprites npz; celeba/ tree)
    celeba_crop: int = 148             # CelebA: side in source pixels of the centred square resized to 64; 0 = largest
    celeba_loader: str = "cache"       # CelebA: cache (decode once to uint8 .npy in data_dir/celeba_cache) | workers
    num_workers: int = 4               # CelebA: threads decoding JPEGs (building the cache; every batch with workers)
    download: bool = False             # CelebA: when missing, fetch it with torchvision's Google-Drive downloader
    data_seed: int = 0                 # color/noisy_dsprites: each image's colour or noise is a hash of this and its index
    val_images: int = 5000             # held-out images scored by the validation loss and attribute plot; 0 = all
    # --- model ---
    latent_dim: int = 10               # number of latent dimensions (Burgess et al. 2018 use 10)
    # --- objective ---
    objective: str = "betaH"           # betaH | vae | betaB | factor | btcvae | dipI | dipII; betavae/objectives.py
    recon: str = "bernoulli"           # reconstruction likelihood: bernoulli (binary data) | gaussian | laplace
    recon_std: float = 0.7071          # fixed σ of a gaussian/laplace likelihood; 1/√2: Gaussian NLL = Σ squared error
    beta: float = 4.0                  # weight on KL (Higgins et al. 2017); the value reached at the end of annealing
    beta_start: typing.Optional[float] = None  # β at step 0 when annealing; null means β is constant
    anneal_steps: int = 0              # steps over which β moves from beta_start to beta along beta_schedule (either way)
    beta_schedule: str = "linear"      # shape of β's move: constant | linear | cosine | cyclical (Fu et al. 2019)
    beta_delay: int = 0                # steps β stays at beta_start before its schedule starts
    beta_normalised: bool = False      # betaH: `beta` is Higgins's β_norm = β·latent_dim/pixels (both are logged)
    gamma: float = 1.0                 # betaB: weight on |KL − C|; factor: on TC; btcvae: on dimension-wise KL
    gamma_start: typing.Optional[float] = None  # γ at step 0 when scheduled; null means γ is constant
    gamma_steps: int = 0               # steps over which γ moves from gamma_start to gamma
    gamma_schedule: str = "linear"     # constant | linear | cosine | cyclical
    gamma_delay: int = 0               # steps γ stays at gamma_start before its schedule starts
    capacity: float = 25.0             # betaB: capacity C (nats) at the end of its schedule (Burgess et al. 2018)
    capacity_start: typing.Optional[float] = 0.0  # C at step 0 (nats); null means C is constant
    capacity_steps: int = 100_000      # steps over which C moves from capacity_start to capacity
    capacity_schedule: str = "linear"  # constant | linear | cosine | cyclical
    capacity_delay: int = 0            # steps C stays at capacity_start before its schedule starts
    schedule_cycles: int = 4           # cyclical schedules: number of cycles within their steps (Fu et al. 2019: 4)
    schedule_ratio: float = 0.5        # cyclical schedules: fraction of each cycle spent ramping (Fu et al. 2019: 0.5)
    alpha: float = 1.0                 # btcvae: weight on the index-code mutual information (Chen et al. 2018)
    tc_estimator: str = "mws"          # btcvae: mws (minibatch-weighted) | mss (minibatch-stratified) sampling
    lambda_od: float = 10.0            # dipI/dipII: weight on the off-diagonal covariance entries (Kumar et al. 2018)
    lambda_d: float = 100.0            # dipI/dipII: weight on the diagonal covariance entries' distance to 1
    discriminator_lr: float = 1e-4     # factor: the discriminator's Adam learning rate (Kim & Mnih 2018)
    discriminator_beta1: float = 0.5   # factor: the discriminator's Adam β1
    discriminator_beta2: float = 0.9   # factor: the discriminator's Adam β2
    # --- optimisation ---
    batch_size: int = 64               # images per step
    lr: float = 1e-4                   # Adam learning rate (Locatello et al. 2019)
    adam_beta1: float = 0.9            # Adam β1
    adam_beta2: float = 0.999          # Adam β2
    steps: int = 300_000               # optimiser steps (Locatello et al. 2019 train 300k)
    seed: int = 0                      # seeds model init, batch order and sampling noise
    device: str = "auto"               # auto (CUDA when present) | cpu | cuda
    # --- outputs ---
    out_dir: str = "predictions"       # parent folder of run folders
    run_name: str = ""                 # run folder name; empty means <preset or objective>_<dataset>_<time>
    log_every: int = 100               # steps between rows of log.csv and progress-bar updates
    sample_every: int = 5000           # steps between saved reconstruction and traversal images
    checkpoint_every: int = 10000      # steps between checkpoints (one is always written at the end)
    eval_every: int = 0                # steps between evaluations (metrics, validation loss); 0 = only at the end
    traverse_samples: int = 1000       # images encoded to find the highest-|mean| latent and its range
    traverse_points: int = 10          # images per traversal row
    metrics: typing.Union[bool, str] = "default"  # scores at the end and every eval_every steps: default | all | none | names, comma-joined (docs/metrics.md)
    metrics_representation: str = "mean"  # score the encoder mean μ, a sample μ + σ·ε (keys sampled_*), or both
    aam_estimator: str = "quadrature"  # AAM/MMIG's I[z; v]: quadrature | published (as Dubois et al.'s code); docs/metrics.md
    metrics_dci: bool = True           # include DCI, whose boosted trees take minutes by protocol
    metrics_beta_vae: bool = True      # include BetaVAE, whose protocol draws 1.9M images (~20 s beyond the others)
    active_kl: float = 0.01            # nats: a latent whose KL to the prior is below this is inactive (greyed or hidden)
    factor_samples: int = 4            # draws per heat-map cell / factor value for the dSprites factor pictures; 0 = none
    # --- performance (faster; the same function but for amp=bf16, which changes numerics: docs/speed.md) ---
    compile: typing.Union[bool, str] = "auto"         # auto | true | false: torch.compile the model
    amp: typing.Union[bool, str] = "auto"             # auto (bf16 if measured ≥10% faster here) | bf16 | false
    channels_last: typing.Union[bool, str] = "auto"   # auto | true | false: channels-last memory format
    fused_adam: typing.Union[bool, str] = "auto"      # auto | true | false: Adam's fused kernel, one launch for all
    cuda_graphs: typing.Union[bool, str] = "auto"     # auto | true | false: replay steps as CUDA graphs (CUDA, compile)
    fused_deconv: typing.Union[bool, str] = "auto"    # auto | true | false: decoder's deconvs+ReLUs+output as one op (CPU)
    fused_conv: typing.Union[bool, str] = "auto"      # auto | true | false: encoder's convs+ReLUs as one op (CPU)
    threads: int = 0                   # CPU threads for torch; 0 leaves torch's default (one per core)
    pack: typing.Union[int, str] = "auto"  # models trained together in one step (sweeps); auto measures the best


# Yukun Chen's TensorFlow β-VAE on CelebA: Gaussian likelihood, batch 64, Adam 5e-4 (β1 0.5), 100k steps, 32 latents;
# its β grid {1, 10, 100, 1000, 10000}: β = 10 read as "background colour and gender", 100 shading, ≥ 1000 collapsed.
_CELEBA = {"dataset": "celeba", "recon": "gaussian", "latent_dim": 32, "batch_size": 64, "lr": 5e-4,
           "adam_beta1": 0.5, "steps": 100_000, "eval_every": 5000}

_FACTOR_DATASETS = [name for name, entry in DATASET_NAMES.items() if entry.factors and name != "dsprites"]

# Named presets: partial overrides of the defaults above; docs/references.md cites each published setting.
PRESETS: dict[str, dict] = {
    # Higgins et al. 2017 β-VAE on dSprites at the settings of Locatello et al. 2019 (= the defaults).
    "betaH_dsprites": {},
    # A CPU demo: β = 16 so that position separates (at β = 4 it went to diagonal latents); 10,000 steps so that
    # every seed has settled (`python sweep.py --preset demo_seeds` re-measures it).
    "demo": {"beta": 16.0, "steps": 10_000, "lr": 5e-4, "log_every": 50, "sample_every": 2000, "checkpoint_every": 2000,
             "traverse_samples": 500, "metrics": "default,aam_mmig", "metrics_dci": False},  # DCI's trees take minutes
    "betaH_celeba": {**_CELEBA, "beta": 10.0},
    # The original project's annealed runs: β 100 → 0 ("face structure, jaw and forehead") and 0 → 10
    # ("background colour and shading"), each over 40k steps.
    "betaH_celeba_anneal_down": {**_CELEBA, "beta_start": 100.0, "beta": 0.0, "anneal_steps": 40_000},
    "betaH_celeba_anneal_up": {**_CELEBA, "beta_start": 0.0, "beta": 10.0, "anneal_steps": 40_000},
    # The objectives compared in the literature, at the settings of Locatello et al. 2019 (batch 64, 300k steps,
    # Adam 1e-4) with a value from each one's published grid (disentanglement_lib unsupervised_study_v1).
    "vae_dsprites": {"objective": "vae"},
    # Burgess et al. 2018 (γ 100–1000, C_max 20–25 nats over 100k steps) ∩ Locatello (γ = 1000, C_max 25).
    "betaB_dsprites": {"objective": "betaB", "gamma": 1000.0, "capacity": 25.0, "capacity_start": 0.0, "capacity_steps": 100_000},
    # Kim & Mnih 2018 (γ ≈ 6.4–40) ∩ Locatello (γ ∈ {10, …, 100}); discriminator Adam 1e-4, β 0.5/0.9.
    "factor_dsprites": {"objective": "factor", "gamma": 30.0},
    # Chen et al. 2018 with α = γ = 1; β from Locatello et al.'s grid {1, 2, 4, 6, 8, 10}.
    "btcvae_dsprites": {"objective": "btcvae", "alpha": 1.0, "beta": 6.0, "gamma": 1.0, "tc_estimator": "mws"},
    # Kumar et al. 2018 as in Locatello et al.: λ_od from {1, 2, 5, 10, 20, 50}; λ_d = 10·λ_od (I), λ_od (II).
    "dipI_dsprites": {"objective": "dipI", "lambda_od": 10.0, "lambda_d": 100.0},
    "dipII_dsprites": {"objective": "dipII", "lambda_od": 10.0, "lambda_d": 10.0},
    # Every other dataset with factors (from the registry) at betaH_dsprites' settings; Bernoulli kept, as Locatello et
    # al.: its cross-entropy takes targets in [0, 1] per channel, is least at x̂ = x, and keeps β = 4 weighed alike.
    **{f"betaH_{name}": {"dataset": name} for name in _FACTOR_DATASETS},
}

# What each preset trains and what for, as `python main.py --help` lists it: one sentence each.
PRESET_DESCRIPTIONS: dict[str, str] = {
    "betaH_dsprites": "Higgins et al.'s β-VAE (β = 4) on dSprites for 300k steps at Locatello et al.'s settings, "
                      "the published baseline (the same as no preset).",
    "demo": "A β = 16 β-VAE on dSprites for 10k steps, to see disentangling on a CPU in minutes (README: measured time).",
    "betaH_celeba": "A β = 10 β-VAE on CelebA for 100k steps at the original TensorFlow project's settings, to "
                    "compare its traversals with that project's.",
    "betaH_celeba_anneal_down": "A β-VAE on CelebA with β annealed from 100 down to 0 over 40k steps, the original "
                                "project's run whose traversals showed face structure.",
    "betaH_celeba_anneal_up": "A β-VAE on CelebA with β annealed from 0 up to 10 over 40k steps, the original "
                              "project's run whose traversals showed background colour and shading.",
    "vae_dsprites": "A plain VAE (β = 1) on dSprites for 300k steps, the baseline every disentangling objective "
                    "is compared with.",
    "betaB_dsprites": "Burgess et al.'s capacity β-VAE (γ = 1000, C rising to 25 nats over 100k steps) on dSprites "
                      "for 300k steps, to compare with the published scores.",
    "factor_dsprites": "Kim & Mnih's FactorVAE (γ = 30) on dSprites for 300k steps, to compare with the published "
                       "scores.",
    "btcvae_dsprites": "Chen et al.'s β-TCVAE (β = 6) on dSprites for 300k steps, to compare with the published "
                       "scores.",
    "dipI_dsprites": "Kumar et al.'s DIP-VAE-I (λ_od = 10, λ_d = 100) on dSprites for 300k steps, to compare with "
                     "the published scores.",
    "dipII_dsprites": "Kumar et al.'s DIP-VAE-II (λ_od = λ_d = 10) on dSprites for 300k steps, to compare with the "
                      "published scores.",
    **{f"betaH_{name}": f"The β = 4 β-VAE on {name} for 300k steps at Locatello et al.'s settings (docs/data.md)."
       for name in _FACTOR_DATASETS},
}

# Named sweeps for sweep.py: a base run preset ("preset") and/or base overrides ("set"), a "grid" (param → values,
# cartesian product) and a "zip" (params whose value lists move together). Seeds: 3 per setting, a compute-bounded
# choice (Locatello et al. 2019 show seeds matter as much as β; they used 50).
SWEEPS: dict[str, dict] = {
    # The original CelebA project's eight runs, read side by side by their highest-|mean| traversal.
    "original_celeba": {"preset": "betaH_celeba", "zip": {
        "objective": ["betaH"] * 7 + ["vae"],
        "beta": [10000.0, 1000.0, 100.0, 10.0, 0.0, 10.0, 0.0, 1.0],
        "beta_start": [None, None, None, None, 100.0, 0.0, 10000.0, None],
        "anneal_steps": [0, 0, 0, 0, 40_000, 40_000, 100_000, 0]}},
    # Higgins et al. 2017, Fig. 6: normalised β (β·latent_dim/pixels) over a log grid, one line per latent size.
    "beta_tradeoff_dsprites": {"preset": "betaH_dsprites", "set": {"beta_normalised": True},
                               "grid": {"beta": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0],
                                        "latent_dim": [5, 10, 20], "seed": [0, 1, 2]}},
    # Dubois et al. 2019 (poster), Table 1: β-VAE₂ takes betaB_dsprites' settings, FactorVAE factor_dsprites' γ.
    "poster_table1_dsprites": {"preset": "betaH_dsprites", "set": {"metrics": "default,aam_mmig"}, "zip": {
        "objective": ["vae", "betaH", "betaH", "betaB", "factor"],
        "beta": [1.0, 4.0, 50.0, 1.0, 1.0],
        "gamma": [1.0, 1.0, 1.0, 1000.0, 30.0]}, "grid": {"seed": [0, 1, 2]}},
    # float32 and bf16: what auto picks on CPUs without and with fast bf16.
    "demo_seeds": {"preset": "demo", "grid": {"amp": [False, "bf16"], "seed": [0, 1, 2, 3, 4]}},
    # 2,000 steps: shorter runs were still leaving a collapsed start. No BetaVAE score, to save time.
    "sweep_demo": {"preset": "demo", "set": {"steps": 2000, "sample_every": 1000, "checkpoint_every": 1000,
                                             "metrics": "default,aam_mmig", "metrics_dci": False,
                                             "metrics_beta_vae": False},
                   "grid": {"beta": [1.0, 4.0, 16.0], "seed": [0, 1]}},
}

# What each sweep trains and what for, as `python sweep.py --help` lists it: one sentence each.
SWEEP_DESCRIPTIONS: dict[str, str] = {
    "original_celeba": "The original TensorFlow project's eight CelebA runs (β from 10 to 10000, three annealed, a "
                       "plain VAE), to compare their traversals with its pictures.",
    "beta_tradeoff_dsprites": "Higgins et al.'s β-VAE on dSprites over eight normalised β values and 5, 10 and 20 "
                              "latents, three seeds each, to redraw their BetaVAE score against β (Fig. 6).",
    "poster_table1_dsprites": "VAE, β-VAE (β = 4 and 50), capacity β-VAE and FactorVAE on dSprites, three seeds "
                              "each, to reproduce the AAM and MMIG of Dubois et al.'s poster (Table 1).",
    "demo_seeds": "The demo preset over five seeds in float32 and in bf16, to check the README's demo claim "
                  "with mean ± std.",
    "sweep_demo": "The demo preset at 2,000 steps for β = 1, 4 and 16 and two seeds, to see the β trade-off on a "
                  "CPU in minutes.",
}


def _closest(name: str) -> str:
    matches = difflib.get_close_matches(name, [f.name for f in fields(Params)], n=3, cutoff=0.5)
    return ", ".join(matches) if matches else "see params.py"


# YAML 1.1 (PyYAML) reads 1e-4 and 5e-4 as strings: it wants a dot and a signed exponent (1.0e-4).
_EXPONENT_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+")


def _coerce(key: str, value, annotation):
    """Check `value` against a field's annotation; ints are accepted where floats are expected."""
    allowed = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
        else (annotation,)
    for kind in allowed:
        if kind is type(None) and value is None:
            return None
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is float and isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            return float(value)
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind in (str, bool) and isinstance(value, kind):
            return value
    names = " or ".join("null" if k is type(None) else k.__name__ for k in allowed)
    raise UserError(f"Param '{key}' must be {names}, got {value!r}; fix its value.")


# Speed switches that measured no gain beyond the noise (docs/speed.md): a checkpoint or params.yaml that names
# them still loads, and the value is dropped; --set names them as an error.
RETIRED = {"flush_denormal": "it measured no gain", "fast_bce": "it measured no gain", "output_gemm": "fused_deconv includes it"}


def apply_overrides(params: Params, overrides: dict, source: str) -> Params:
    """Return a copy of `params` with `overrides` applied, each checked by name and type."""
    types_by_name = typing.get_type_hints(Params)
    checked = {}
    for key, value in overrides.items():
        if key in RETIRED and source != "--set":
            continue
        if key in RETIRED:
            raise UserError(f"Param '{key}' was removed ({RETIRED[key]}); drop it from --set.")
        if key not in types_by_name:
            raise UserError(f"Unknown param '{key}' in {source}; did you mean: {_closest(str(key))}?")
        checked[key] = _coerce(key, value, types_by_name[key])
    return dataclasses.replace(params, **checked)


def parse_assignment(text: str) -> tuple[str, object]:
    """'key=value' → (key, YAML-parsed value), so numbers, booleans and null get their types."""
    if "=" not in text:
        raise UserError(f"--set expects key=value, got '{text}'; write e.g. --set beta=4.")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_yaml(path: str) -> dict:
    if os.path.isdir(path):
        raise UserError(f"Config file '{path}' is a directory; give --config a YAML file.")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise UserError(f"Config file '{path}' does not exist; check the path given to --config.") from None
    except (UnicodeDecodeError, ValueError):
        raise UserError(f"Config file '{path}' is not UTF-8 text; give --config a YAML file.") from None
    except OSError as error:
        raise UserError(f"Config file '{path}' cannot be read ({error.strerror}); check the path.") from None
    except yaml.YAMLError as error:
        raise UserError(f"Config file '{path}' is not valid YAML ({str(error).splitlines()[0]}); fix it.") from None
    if not isinstance(data, dict):
        raise UserError(f"Config file '{path}' must hold a mapping of param names to values.")
    return data.get("params", data) if isinstance(data.get("params"), dict) else data


def build_params(preset: str | None = None, config: str | None = None, assignments: list[str] = ()) -> Params:
    """Defaults → preset → YAML file → --set assignments, in that order."""
    params = Params()
    if preset is not None:
        if preset not in PRESETS:
            close = difflib.get_close_matches(preset, PRESETS, n=3, cutoff=0.3)
            raise UserError(f"Unknown preset '{preset}'; choose one of: {', '.join(close or PRESETS)}.")
        params = apply_overrides(params, PRESETS[preset], f"preset '{preset}'")
    if config is not None:
        params = apply_overrides(params, load_yaml(config), f"'{config}'")
    params = apply_overrides(params, dict(parse_assignment(a) for a in assignments), "--set")
    validate(params)
    return params


SPEED_SWITCHES = ("compile", "amp", "channels_last", "fused_adam", "cuda_graphs", "fused_deconv", "fused_conv")
SCHEDULE_SHAPES = ("constant", "linear", "cosine", "cyclical")              # losses.schedule_value draws each
CHOICES = {"dataset": (*DATASET_NAMES, "PATH.npz"), "objective": OBJECTIVES.keys(), "recon": ("bernoulli", "gaussian", "laplace"),
           **{f"{term}_schedule": SCHEDULE_SHAPES for term in ("beta", "gamma", "capacity")}, "device": ("auto", "cpu", "cuda"),
           "metrics_representation": ("mean", "sampled", "both"), "aam_estimator": ("quadrature", "published"), "tc_estimator": ("mws", "mss"), "celeba_loader": ("cache", "workers"),
           **{switch: ("auto", True, False) for switch in SPEED_SWITCHES if switch != "amp"}, "amp": ("auto", "bf16", False)}
POSITIVE = ("latent_dim", "batch_size", "steps", "log_every", "sample_every", "checkpoint_every", "traverse_samples",
            "traverse_points", "lr", "recon_std", "schedule_cycles", "schedule_ratio", "discriminator_lr", "num_workers")
NOT_NEGATIVE = ("anneal_steps", "beta_delay", "gamma_steps", "gamma_delay", "capacity_steps", "capacity_delay",
                "celeba_crop", "val_images", "eval_every", "active_kl", "factor_samples", "threads")

WEIGHTS = ("beta", "beta_start", "gamma", "gamma_start", "capacity", "capacity_start", "alpha", "lambda_od", "lambda_d")
ADAM_BETAS = ("adam_beta1", "adam_beta2", "discriminator_beta1", "discriminator_beta2")


def validate(params: Params) -> None:
    """Value checks beyond types, so a bad run stops before it starts."""
    if params.dataset.endswith(".npz") and not os.path.isfile(params.dataset):
        raise DataError(f"No file at {params.dataset}; give --set dataset= the path of an existing .npz file.")
    for key, allowed in CHOICES.items():
        if getattr(params, key) not in allowed and not (key == "dataset" and params.dataset.endswith(".npz")):
            names = ", ".join(str(v).lower() if isinstance(v, bool) else v for v in allowed)  # YAML's true, false
            raise UserError(f"Param '{key}' is '{getattr(params, key)}'; choose one of: {names}.")
    for field in fields(params):
        value = getattr(params, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"Param '{field.name}' must be a finite number, got {value}; give a real value.")
    for key in WEIGHTS:
        if getattr(params, key) is not None and getattr(params, key) < 0:
            raise UserError(f"Param '{key}' is a weight and must be zero or positive, got {getattr(params, key)}.")
    for key in ADAM_BETAS:
        if not 0 <= getattr(params, key) < 1:
            raise UserError(f"Param '{key}' is an Adam decay rate and must lie in [0, 1), got {getattr(params, key)}.")
    for key in POSITIVE:
        if getattr(params, key) <= 0:
            raise UserError(f"Param '{key}' must be positive, got {getattr(params, key)}.")
    for key in NOT_NEGATIVE:
        if getattr(params, key) < 0:
            raise UserError(f"Param '{key}' must be zero or positive, got {getattr(params, key)}.")
    from betavae.evaluation.scores import select
    select(params.metrics)  # an unknown metric name is a UserError naming the closest
    if params.schedule_ratio > 1:
        raise UserError(f"Param 'schedule_ratio' is a fraction of a cycle; give a value in (0, 1], got {params.schedule_ratio}.")
    if params.pack != "auto" and (isinstance(params.pack, bool) or not isinstance(params.pack, int) or params.pack < 1):
        raise UserError(f"Param 'pack' is {params.pack!r}; give a positive number of models per step or auto.")
    if OBJECTIVES[params.objective].batch_estimate and params.batch_size < 2:
        raise UserError(f"Objective '{params.objective}' estimates q(z) across the batch; set batch_size to 2 or "
                        f"more (64 is usual).")
