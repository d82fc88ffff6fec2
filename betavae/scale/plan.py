"""A sweep's plan before it starts: points, packs, steps, and its training time estimated from a few timed steps."""
from __future__ import annotations

import collections
import dataclasses
import os

import torch

from betavae.scale import packed, packing
from betavae.scale.sweep_spec import DATA_KEYS, Point
from betavae.scale.sweeping import point_finished, start_step, sweep_steps
from betavae.sources.interface import REGISTRY

TIMED_STEPS = 5  # after two untimed ones (packing.measure): a few seconds on a CPU
TOO_SHORT = 100  # model-steps: a sweep this short trains in less time than timing it would take


def channels_of(dataset: str) -> int:
    """The registry's channels of a dataset; an npz, whose channels are unknown before it is read, is timed as RGB."""
    entry = REGISTRY.get(dataset)
    return entry.channels if entry is not None else 3


class Probe:
    """A stand-in dataset of random images, so packing.resolve_pack can measure before any data is loaded (its
    choice is cached for the sweep's own run_points); a step's time does not depend on what the pixels show."""

    def __init__(self, params, device: torch.device):
        self.channels = channels_of(params.dataset)
        generator = torch.Generator().manual_seed(0)
        self.images = torch.rand(max(256, params.batch_size), self.channels, 64, 64, generator=generator).to(device)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.images[indices],)


def remaining_steps(point: Point, out: str) -> int | None:
    """Steps `point` still has to train: None when finished, params.steps less its checkpoint's step otherwise."""
    folder = os.path.join(out, point.name)
    if point_finished(folder, point.params):
        return None
    step = start_step(folder)
    return max(point.params.steps - (step if isinstance(step, int) else 0), 0)


def packs(points: list[Point], steps: dict[str, int], device: torch.device) -> list[list[Point]]:
    """The packs run_points will form: points sharing packed.pack_key, data and remaining steps, K at a time."""
    pending, groups = [p for p in points if steps[p.name] is not None], []
    total = sweep_steps(pending)
    while pending:
        first = pending.pop(0)
        size = packing.resolve_pack(first.params, Probe(first.params, device), device, total)
        key = (packed.pack_key(first.params), tuple(getattr(first.params, k) for k in DATA_KEYS), steps[first.name])
        same = [p for p in pending if (packed.pack_key(p.params), tuple(getattr(p.params, k) for k in DATA_KEYS),
                                       steps[p.name]) == key][:size - 1]
        pending = [p for p in pending if all(p is not member for member in same)]
        groups.append([first, *same])
    return groups


def timed_params(params, device: torch.device):
    """The params timed for the estimate: on CUDA without torch.compile, whose compilation would cost minutes."""
    return dataclasses.replace(params, compile=False, cuda_graphs=False) if device.type == "cuda" else params


def rate_of(group: list[Point], device: torch.device, rates: dict) -> float:
    """Model-steps/s of a pack like `group` on `device`: what packing.resolve_pack measured for pack=auto, else
    timed here once per kind of model (the FactorVAE's discriminator costs more) and pack size."""
    params = group[0].params
    kind = (params.dataset, params.objective if params.objective == "factor" else "", params.latent_dim,
            params.batch_size, params.amp, len(group))
    measured = packing.AUTO_RATES.get((str(device), channels_of(params.dataset), params.latent_dim,
                                       params.batch_size, params.amp), {})
    if kind not in rates and params.pack == "auto" and params.objective != "factor" and measured:
        rates[kind] = between(measured, len(group))
    if kind not in rates:
        timed = timed_params(params, device)
        rates[kind] = packing.measure(timed, Probe(timed, device).images, device, len(group), TIMED_STEPS)
    return rates[kind]


def between(rates: dict[int, float], size: int) -> float:
    """The rate at pack `size`, linear between the measured sizes around it (the nearest one outside them)."""
    below, above = max((k for k in rates if k <= size), default=min(rates)), min((k for k in rates if k >= size),
                                                                                 default=max(rates))
    if below == above:
        return rates[below]
    return rates[below] + (rates[above] - rates[below]) * (size - below) / (above - below)


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 3600:.0f} h ({seconds / 86400:.1f} days)"


def rate_text(rates: dict) -> str:
    """The first three measured rates in words, and how many more there were."""
    kinds = [f"{'FactorVAE, ' if objective else ''}{latents} latents, batch {batch}"
             f"{', bf16' if amp == 'bf16' else ''}, pack of {size}: {rate:.1f} model-steps/s"
             for (_, objective, latents, batch, amp, size), rate in list(rates.items())[:3]]
    more = len(rates) - len(kinds)
    return "; ".join(kinds) + (f"; and {more} more kind{'s' * (more > 1)}" if more else "")


def describe(points: list[Point], out: str, device: torch.device, *, estimate: bool = True, ranks: int = 1) -> str:
    """The plan as lines for the terminal: what will train, and (with `estimate`) for about how long here."""
    steps = {p.name: remaining_steps(p, out) for p in points}
    todo = [p for p in points if steps[p.name] is not None]
    if not todo:
        return f"plan: all {len(points)} points are finished; only the report is rebuilt."
    groups = packs(points, steps, device)
    sizes = collections.Counter(len(g) for g in groups)
    shapes = " and ".join(f"{n} pack{'s' * (n > 1)} of {k}" for k, n in sorted(sizes.items(), reverse=True))
    counts = sorted({steps[p.name] for p in todo})
    each = f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,} to {counts[-1]:,}"
    total = sum(steps[p.name] for p in todo)
    lines = [f"plan: {len(points)} points, {len(todo)} to train ({each} steps each, {total:,} model-steps) as "
             f"{shapes} on {device}" + (f", split over {ranks} ranks" if ranks > 1 else "") + "."]
    if not estimate or total < TOO_SHORT:
        why = "--no-estimate" if not estimate else f"under {TOO_SHORT} model-steps train faster than they time"
        return "\n".join(lines + [f"plan: no time estimate ({why})."])
    rates: dict = {}
    seconds = sum(steps[g[0].name] * len(g) / rate_of(g, device, rates) for g in groups) / ranks
    lines.append(f"plan: about {duration(seconds)} of training{' per rank' if ranks > 1 else ''}, an estimate from "
                 f"{TIMED_STEPS} timed steps of each kind of model on this device now ({rate_text(rates)})"
                 + (", without torch.compile" if device.type == "cuda" else "")
                 + "; metrics, pictures and checkpoints come on top.")
    return "\n".join(lines)
