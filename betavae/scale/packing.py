"""How many models to pack: model-steps/s of K models packed against K one after another, measured on the device."""
from __future__ import annotations

import dataclasses
import time

import torch

from betavae.scale.packed import Pack
from betavae.speed import switches
from betavae.training import loop
from betavae import parts
from betavae.objectives import REGISTRY as OBJECTIVES
from params import Params

AUTO_CANDIDATES = {"cpu": (1, 2, 4), "cuda": (1, 8, 32, 128)}
_AUTO_CACHE: dict[tuple, int] = {}  # (device, channels, latent_dim, batch_size, amp) → measured best pack size
AUTO_RATES: dict[tuple, dict[int, float]] = {}  # the same key → {pack size: model-steps/s} behind that choice
# Measuring trains 7 steps of each candidate pack (49 model-steps on a CPU) and builds 7 models; a pack saves at most
# a fraction of the sweep's time, so sweeps this short (model-steps) are not measured.
MEASURE_FROM = 2000


def _one_after_another(params_list: list[Params], images: torch.Tensor, device: torch.device):
    """A function running each model for `steps` steps in turn, as loop.train does (loop.train_step)."""
    runs = []
    for params in params_list:
        model, optimizer, objective = parts.build(
            params, images.shape[1], len(images), device,
            lambda model, params=params: switches.adam_options(switches.prepare(model, params, device)))
        generator = torch.Generator(device).manual_seed(0)

        def run(steps, model=model, optimizer=optimizer, objective=objective, generator=generator, params=params):
            for step in range(steps):
                indices = torch.randint(len(images), (params.batch_size,), generator=generator, device=device)
                loop.train_step(model, optimizer, objective, images[indices], step, params)
        runs.append(run)
    return lambda steps: [run(steps) for run in runs]


def _packed(params_list: list[Params], images: torch.Tensor, device: torch.device):
    """A function running `steps` packed steps of all the models."""
    switches.apply_process_settings(params_list[0], device)
    pack = Pack(params_list, images.shape[1], len(images), device)
    generators = [torch.Generator(device).manual_seed(k) for k in range(len(params_list))]

    def run(steps):
        for step in range(steps):
            xs = torch.stack([images[torch.randint(len(images), (params_list[0].batch_size,), generator=g,
                                                   device=device)] for g in generators])  # [K, B, C, 64, 64]
            pack.train_step(xs, step)
    return run


def timer(params: Params, images: torch.Tensor, device: torch.device, size: int, packed: bool = True):
    """A function timing `steps` steps of `size` copies of params (seeds params.seed + k), packed or one after
    another; returns model-steps/s. images: [N, C, 64, 64] on device."""
    params_list = [dataclasses.replace(params, seed=params.seed + k) for k in range(size)]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        run = (_packed if packed and size > 1 else _one_after_another)(params_list, images, device)

    def timed(steps: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run(steps)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return size * steps / (time.perf_counter() - start)
    return timed


def measure(params: Params, images: torch.Tensor, device: torch.device, size: int, steps: int = 5) -> float:
    """Model-steps/s of a pack of `size` (size 1: loop.train's own step), after two untimed steps."""
    timed = timer(params, images, device, size)
    timed(2)
    return timed(steps)


def resolve_pack(params: Params, dataset, device: torch.device, model_steps: int | None = None) -> int:
    """params.pack, or for "auto" the candidate pack size with the most model-steps/s measured on `device`
    (cached per device and shape for the process); a pack must beat one model by 10% to be chosen, since on a
    loaded machine smaller differences are noise and packing must never cost. A sweep of fewer than
    MEASURE_FROM `model_steps` trains one model at a time unmeasured: the measurement would cost more than a pack
    could save."""
    if params.pack != "auto":
        return params.pack
    if not OBJECTIVES[params.objective].packable or (model_steps is not None and model_steps < MEASURE_FROM):
        return 1                                          # its contract says so (see train_pack), or too short
    key = (str(device), dataset.channels, params.latent_dim, params.batch_size, params.amp)
    if key not in _AUTO_CACHE:
        images = dataset.batch(torch.randint(len(dataset), (max(256, params.batch_size),),
                                             generator=torch.Generator().manual_seed(0)))[0]
        rates = {size: measure(params, images, device, size) for size in AUTO_CANDIDATES.get(device.type, (1,))}
        AUTO_RATES[key] = rates  # sweep.py's plan estimates its time from them
        best = max(rates, key=rates.get)
        _AUTO_CACHE[key] = best if rates[best] >= 1.1 * rates[1] else 1
    return _AUTO_CACHE[key]
