"""Checkpoints of the VAE: written atomically, loaded safely (weights_only), every way a file can be wrong one
sentence."""
from __future__ import annotations

import contextlib
import copy
import os
import shutil
import tempfile

import torch

from betavae.errors import CheckpointWriteError, UserError
from betavae.network import VAE

CHECKPOINT_FORMAT = "beta-vae-checkpoint/1"
# What a checkpoint holds (`layout` writes it; `checked` reads it): key → type. A stateful objective adds "objective".
LAYOUT = {"model": dict, "optimizer": dict, "step": int, "rng": dict, "params": dict, "channels": int,
          "latent_dim": int}
REQUIRED = ("model", "params", "latent_dim", "channels", "step")  # what opening one for pictures and scores needs


def layout(model: dict, optimizer: dict, step: int, rng: dict, params: dict, channels: int, latent_dim: int,
           objective: dict | None = None) -> dict:
    """A checkpoint, as a single run and each model of a pack write it; copied, so training on cannot change it."""
    state = {"model": model, "optimizer": optimizer, "step": step, "rng": rng, "params": params, "channels": channels,
             "latent_dim": latent_dim, **({"objective": objective} if objective is not None else {})}
    return copy.deepcopy(state)


def honour_umask(path: str) -> None:
    """mkstemp makes files 0600; give them the mode a plain open() would, so a group can read a run's files."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def save_checkpoint(path: str, state: dict) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact. Failure: CheckpointWriteError."""
    folder = os.path.dirname(os.path.abspath(path))
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
        os.close(handle)
        honour_umask(temporary)
        torch.save({"format": CHECKPOINT_FORMAT, **state}, temporary)
        os.replace(temporary, path)
    except (OSError, RuntimeError) as error:  # torch reports a failed write as RuntimeError (inline_container.cc)
        reason = getattr(error, "strerror", None) or (  # torch's own message names only its C++ source line
            f"the write failed with {shutil.disk_usage(folder).free / 1e6:.0f} MB free on that disk"
            if os.path.isdir(folder) else str(error).strip().splitlines()[0][:120])
        raise CheckpointWriteError(f"the checkpoint could not be written to {path} ({reason})") from None
    finally:
        if temporary is not None and os.path.exists(temporary):
            with contextlib.suppress(OSError):
                os.remove(temporary)


def load_checkpoint(path: str) -> dict:
    """Load with weights_only=True; every way a file can be wrong raises one actionable UserError."""
    if not os.path.isfile(path):
        raise UserError(f"No checkpoint at '{path}'; pass a checkpoint.pt written by main.py "
                        f"(e.g. predictions/<run>/checkpoint.pt).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for truncated, pickled-code or non-torch files
        raise UserError(f"'{path}' is not a readable checkpoint (truncated, corrupt or not written by main.py); "
                        f"use another checkpoint or retrain.") from None
    return checked(state, path)


def checked(state, path: str) -> dict:
    """`state` (what torch.load gave for `path`) if it is a checkpoint of this repository's VAE; UserError if not."""
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "model" not in state:
        raise UserError(f"'{path}' is a PyTorch file but not a checkpoint of this repository's VAE; "
                        f"pass a checkpoint.pt written by main.py.")
    for key, kind in ((key, LAYOUT[key]) for key in REQUIRED):
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            problem = "lacks" if key not in state else f"has a {type(value).__name__} as"
            raise UserError(f"'{path}' {problem} '{key}' (a {kind.__name__} in a checkpoint written by main.py); "
                            f"use another checkpoint or retrain.")
    return state


def model_from_checkpoint(state: dict) -> VAE:
    """Rebuild the network from the checkpoint alone (its shape is stored beside the weights)."""
    model = VAE(state["channels"], state["latent_dim"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:
        raise UserError("The checkpoint's weights do not fit the VAE it describes (written by another version "
                        "of models.py?); retrain or use a matching checkpoint.") from None
    return model
