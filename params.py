"""Every knob of a run, its presets, and the layered overrides: preset → YAML file → --set key=value."""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, fields

import yaml


class UserError(Exception):
    """A mistake the user can fix; the message is one sentence saying how. Reported without a traceback."""


@dataclass
class Params:
    # --- data ---
    dataset: str = "dsprites"          # dsprites | celeba
    data_dir: str = "data"             # folder searched for dataset files (dSprites npz; celeba/ tree)
    # --- model ---
    latent_dim: int = 10               # number of latent dimensions (Burgess et al. 2018 use 10)
    # --- objective ---
    objective: str = "betaH"           # betaH (reconstruction + β·KL) | vae (β = 1); see losses.OBJECTIVES
    recon: str = "bernoulli"           # reconstruction likelihood: bernoulli (binary data) | gaussian
    recon_std: float = 0.7071          # σ of the fixed-variance Gaussian; 1/√2 makes the NLL the summed squared error
    beta: float = 4.0                  # weight on KL (Higgins et al. 2017); the value reached at the end of annealing
    beta_start: typing.Optional[float] = None  # β at step 0 when annealing; None means β is constant
    anneal_steps: int = 0              # steps over which β moves linearly from beta_start to beta (either direction)
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
    # --- performance (same results, faster; "auto" = performance.AUTO's choice for the device, see README "Speed") ---
    compile: typing.Union[bool, str] = "auto"         # auto | true | false: torch.compile the model
    amp: typing.Union[bool, str] = "auto"             # auto | bf16 | false: bf16 autocast around the forward pass
    channels_last: typing.Union[bool, str] = "auto"   # auto | true | false: channels-last memory format
    fused_adam: typing.Union[bool, str] = "auto"      # auto | true | false: Adam's fused kernel, one launch for all
    cuda_graphs: typing.Union[bool, str] = "auto"     # auto | true | false: replay steps as CUDA graphs (CUDA, compile)
    flush_denormal: typing.Union[bool, str] = "auto"  # auto | true | false: flush denormal floats to zero (CPU)
    threads: int = 0                   # CPU threads for torch; 0 leaves torch's default (one per core)


# Named presets: partial overrides of the defaults above. Published settings are cited in REFERENCE.md.
PRESETS: dict[str, dict] = {
    # Higgins et al. 2017 β-VAE on dSprites at the settings of Locatello et al. 2019 (= the defaults).
    "betaH_dsprites": {},
    # A CPU demo: short enough for 2 cores in under 10 minutes, long enough for position to separate.
    "demo": {"steps": 6000, "lr": 5e-4, "log_every": 50, "sample_every": 2000, "checkpoint_every": 2000,
             "traverse_samples": 500},
}


def _field_types() -> dict[str, type]:
    return typing.get_type_hints(Params)


def _closest(name: str) -> str:
    matches = difflib.get_close_matches(name, [f.name for f in fields(Params)], n=3, cutoff=0.5)
    return ", ".join(matches) if matches else "see params.py"


def _coerce(key: str, value, annotation):
    """Check `value` against a field's annotation; ints are accepted where floats are expected."""
    allowed = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
        else (annotation,)
    for kind in allowed:
        if kind is type(None) and value is None:
            return None
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind in (str, bool) and isinstance(value, kind):
            return value
    names = " or ".join("null" if k is type(None) else k.__name__ for k in allowed)
    raise UserError(f"Param '{key}' must be {names}, got {value!r}; fix its value.")


def apply_overrides(params: Params, overrides: dict, source: str) -> Params:
    """Return a copy of `params` with `overrides` applied, each checked by name and type."""
    types_by_name = _field_types()
    checked = {}
    for key, value in overrides.items():
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
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise UserError(f"Config file '{path}' does not exist; check the path given to --config.") from None
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


CHOICES = {"dataset": ("dsprites", "celeba"), "recon": ("bernoulli", "gaussian"), "device": ("auto", "cpu", "cuda"),
           **{switch: ("auto", True, False) for switch in ("compile", "channels_last", "fused_adam", "cuda_graphs",
                                                          "flush_denormal")},
           "amp": ("auto", "bf16", False)}
POSITIVE = ("latent_dim", "batch_size", "steps", "log_every", "sample_every", "checkpoint_every",
            "traverse_samples", "traverse_points", "lr", "recon_std")


def validate(params: Params) -> None:
    """Value checks beyond types, so a bad run stops before it starts."""
    from losses import OBJECTIVES  # late import: losses does not depend on params

    choices = dict(CHOICES, objective=tuple(OBJECTIVES))
    for key, allowed in choices.items():
        if getattr(params, key) not in allowed:
            names = ", ".join(str(v).lower() if isinstance(v, bool) else v for v in allowed)  # YAML's true, false
            raise UserError(f"Param '{key}' is '{getattr(params, key)}'; choose one of: {names}.")
    for key in POSITIVE:
        if getattr(params, key) <= 0:
            raise UserError(f"Param '{key}' must be positive, got {getattr(params, key)}.")
    if params.anneal_steps < 0:
        raise UserError(f"Param 'anneal_steps' must be zero or positive, got {params.anneal_steps}.")
    if params.threads < 0:
        raise UserError(f"Param 'threads' must be zero (torch's default) or positive, got {params.threads}.")
