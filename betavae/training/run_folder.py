"""A run's folder: claimed atomically and locked, params.yaml, log.csv / val.csv, and the checks a resume passes."""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import glob
import os
import platform
import subprocess

try:
    import fcntl  # POSIX; the run-folder lock is skipped where it is missing
except ImportError:  # pragma: no cover
    fcntl = None

import numpy as np
import torch
import yaml

from betavae.errors import UserError
from betavae.scale import ddp
from betavae.speed import switches
from betavae.network import VAE
from params import Params

def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device is 'cuda' but no CUDA GPU is visible; use --set device=auto or device=cpu.")
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))


def new_run_dir(params: Params, preset: str | None) -> str:
    """A fresh folder under out_dir; an existing name gets a numeric suffix, so no run is overwritten."""
    name = params.run_name
    if name and (name in (".", "..") or "/" in name or os.sep in name or (os.altsep and os.altsep in name)):
        raise UserError(f"run_name '{name}' must be a plain folder name (no '/', '..' or absolute path); "
                        f"choose the parent folder with --set out_dir=...")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    dataset = os.path.splitext(os.path.basename(params.dataset))[0]  # an npz path names its file, not its folders
    base = os.path.join(params.out_dir, name or f"{preset or params.objective}_{dataset}_{stamp}")
    folder, suffix = base, 1
    try:
        os.makedirs(params.out_dir, exist_ok=True)
        while True:  # claimed by mkdir itself, so two processes launching the same name never share a folder
            try:
                os.mkdir(folder)
                return folder
            except FileExistsError:
                suffix += 1
                folder = f"{base}-{suffix}"
    except OSError as error:
        raise UserError(f"Cannot create the run folder {folder} ({error.strerror or error}); choose a writable "
                        f"folder with --set out_dir=...") from None


def clear_stale_temporaries(run_dir: str) -> None:
    """Remove half-written checkpoint/report files (*.tmp) a killed process left; only the lock holder calls this."""
    for path in glob.glob(os.path.join(glob.escape(run_dir), "*.tmp")):
        with contextlib.suppress(OSError):
            os.remove(path)


def lock_run_dir(run_dir: str):
    """Hold <run>/.lock (flock, released when the process ends) so only one process trains a run folder."""
    path = os.path.join(run_dir, ".lock")
    try:
        handle = open(path, "a+")
    except OSError as error:
        raise UserError(f"Cannot write to the run folder {run_dir} ({error.strerror or error}); make it writable "
                        f"or start a new run.") from None
    if fcntl is not None:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise UserError(f"Run folder {run_dir} is being trained by another process (pid {owner}); wait for it "
                            f"to end or stop it first.") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def git_commit() -> str:
    try:
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (out.stdout.strip() + ("-dirty" if dirty else "")) if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_params(run_dir: str, params: Params, device: torch.device, argv: list[str],
                 settings: dict | None = None) -> None:
    record = {
        "params": dataclasses.asdict(params),
        "command": " ".join([*(["python"] if ddp.world_size() == 1 else
                               ["torchrun", f"--nnodes={ddp.world_size() // int(os.environ['LOCAL_WORLD_SIZE'])}",
                                f"--nproc_per_node={os.environ['LOCAL_WORLD_SIZE']}"]), "main.py", *argv]),
        "git_commit": git_commit(),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                 f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"),
        "performance": settings or switches.resolve(params, device),  # the speed switches, "auto" resolved
        "versions": {"python": platform.python_version(), "torch": str(torch.__version__), "numpy": np.__version__},
    }
    try:
        with open(os.path.join(run_dir, "params.yaml"), "w") as f:
            yaml.safe_dump(record, f, sort_keys=False)
    except OSError as error:
        raise UserError(f"Cannot write {os.path.join(run_dir, 'params.yaml')} ({error.strerror or error}); make "
                        f"the run folder writable or choose another with --set out_dir=...") from None


class CsvLog:
    """One row per logged step; on resume, rows past the checkpoint are dropped so the log has no duplicates."""

    def __init__(self, path: str, resume_step: int | None):
        self.path, self.writer, self.file = path, None, None
        if resume_step is not None and os.path.exists(path):
            with open(path) as f:
                rows = list(csv.reader(f))
            kept = [rows[0]] + [r for r in rows[1:] if r and r[0].strip().isdigit() and int(r[0]) <= resume_step] \
                if rows else []  # a blank or garbled line (a crash mid-write, an editor) is dropped, not fatal
            with open(path, "w", newline="") as f:
                csv.writer(f).writerows(kept)

    def write(self, row: dict) -> None:
        if self.writer is None:
            fresh = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
            self.file = open(self.path, "a", newline="")
            self.writer = csv.DictWriter(self.file, fieldnames=list(row))
            if fresh:
                self.writer.writeheader()
        self.writer.writerow(row)
        self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()


# Params a resumed run cannot change: the model's shape (latent_dim; dataset sets the channels) or log.csv's columns
# (objective sets the loss terms, latent_dim the kl_i).
FIXED_ON_RESUME = ("latent_dim", "objective", "dataset")


def check_resumable(checkpoint: dict, params: Params) -> None:
    saved = checkpoint["params"]
    for key in FIXED_ON_RESUME:
        if key in saved and saved[key] != getattr(params, key):
            raise UserError(f"--resume cannot change '{key}' ({saved[key]} → {getattr(params, key)}): it changes "
                            f"the model's shape or log.csv's columns; start a new run with --set {key}=... instead.")


def check_weights_fit(checkpoint: dict, channels: int, latent_dim: int, run_dir: str) -> None:
    try:
        VAE(channels, latent_dim).load_state_dict(checkpoint["model"])
    except (RuntimeError, TypeError, KeyError, AttributeError):
        raise UserError(f"The weights in {run_dir}/checkpoint.pt do not fit a VAE with {channels} channels and "
                        f"latent_dim={latent_dim}; resume with the params it was trained with, or start a new run.") \
            from None
