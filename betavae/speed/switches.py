"""Speed switches: each "auto" resolved per device, then applied to a run once (threads, memory, kernels, compile)."""
from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import sys
import time
from typing import Callable

import torch

from betavae.errors import UserError
from betavae.speed import kernels
from params import SPEED_SWITCHES, Params

SWITCHES = SPEED_SWITCHES


def _cpu_probe(name: str) -> bool:
    probe = getattr(torch.cpu, name, None)  # private, so probed; absent in older torch
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Intel Sapphire Rapids and later): oneDNN then runs bf16 convolutions
    on them, several times faster than float32 on the vector units."""
    return _cpu_probe("_is_amx_tile_supported")


def cpu_has_fast_bf16() -> bool:
    """AMX tiles, or AVX-512 BF16 instructions (Intel Cooper Lake, AMD Zen 4 EPYC/Ryzen): oneDNN has native bf16
    convolutions for both. AVX2-only CPUs emulate bf16 through float32 conversions, so they stay float32."""
    return cpu_has_amx() or _cpu_probe("_is_avx512_bf16_supported")


# What "auto" means on each device type; each CPU choice is measured with bench.py (docs/speed.md gives the figures,
# the command and the CPU). channels_last, fused_adam, fused_deconv and fused_conv on CPU; amp ("measure") is bf16
# only where `amp_pays` measures it faster on this CPU (bf16 changes the numerics, docs/speed.md). CUDA: the standard
# recipe for a small overhead-bound network, not measured here (no GPU was available): run bench.py on a GPU and
# change it if its figures disagree.
AUTO = {
    "cpu": {"compile": False, "amp": "measure", "channels_last": True,
            "fused_adam": True, "cuda_graphs": False, "fused_deconv": True, "fused_conv": True},
    "cuda": {"compile": True, "amp": "bf16", "channels_last": True, "fused_adam": True, "cuda_graphs": True,
             "fused_deconv": False, "fused_conv": False},
}
AMP_GAIN = 1.10      # bf16 must run the step this much faster than float32 to be chosen by auto
AMP_CHOICE: list = []  # amp's measured choice on this CPU, once per process


def _rate(model, optimizer, x: torch.Tensor, bf16: bool, steps: int) -> float:
    """Training steps/s of a β-VAE-like step (Bernoulli loss + KL), bf16 autocast around the forward or none."""
    start = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            logits, mu, logvar = model(x)[:3]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), x, reduction="sum") \
            - 0.5 * torch.sum(1 + logvar.float() - mu.float() ** 2 - logvar.float().exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps / (time.perf_counter() - start)


def measure_amp_rates(steps: int = 3, rounds: int = 2) -> tuple[float, float]:
    """(float32, bf16) steps/s of the network at batch 64 on this CPU, each prepared with this repository's switches
    for its precision, windows interleaved; about a second in all."""
    from betavae import parts

    x = (torch.rand(64, 1, 64, 64, generator=torch.Generator().manual_seed(0)) > 0.8).float()
    runs = []
    for amp in (False, "bf16"):
        params = Params(amp=amp, threads=0, seed=0, latent_dim=10, lr=1e-4)
        settings = {}

        def prepared(model, params=params, settings=settings):
            settings.update(prepare(model, params, "cpu", say=lambda _: None))
            return adam_options(settings)
        model, optimizer, _ = parts.build(params, 1, len(x), "cpu", prepared)
        data = to_memory_format(x, params)
        _rate(model, optimizer, data, amp == "bf16", 1)  # warm-up: kernels chosen, buffers allocated
        runs.append((model, optimizer, data, amp == "bf16"))
    rates = [[0.0, 0.0] for _ in range(rounds)]
    for trial in range(rounds):
        for k, run in enumerate(runs if trial % 2 == 0 else runs[::-1]):
            rates[trial][k if trial % 2 == 0 else 1 - k] = _rate(*run, steps)
    return sum(r[0] for r in rates) / rounds, sum(r[1] for r in rates) / rounds


def amp_pays() -> bool:
    """amp's "auto" on a CPU: bf16 where the CPU has native bf16 (AMX or AVX-512 BF16) and a step measures at least
    AMP_GAIN times faster than float32 here; float32 otherwise, and under torchrun (every rank must compute the
    same). Measured once per process; the environment variable BETAVAE_AMP_AUTO=bf16 or false fixes the choice."""
    if not AMP_CHOICE:
        fixed = os.environ.get("BETAVAE_AMP_AUTO", "").lower()
        if fixed in ("bf16", "false"):
            AMP_CHOICE.append(fixed == "bf16")
        elif not cpu_has_fast_bf16() or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            AMP_CHOICE.append(False)
        else:
            float32, bf16 = measure_amp_rates()
            AMP_CHOICE.append(bf16 >= AMP_GAIN * float32)
    return AMP_CHOICE[0]


def auto_value(kind: str, name: str):
    """What "auto" resolves to for switch `name` on a device type (any other backend gets the CPU's choices)."""
    value = AUTO.get(kind, AUTO["cpu"])[name]
    return ("bf16" if amp_pays() else False) if value == "measure" else value


def resolve(params: Params, device: torch.device | str) -> dict[str, object]:
    """The settings a run on `device` uses: each "auto" replaced by AUTO's choice, each explicit value checked."""
    kind = torch.device(device).type
    settings = {name: auto_value(kind, name) if getattr(params, name) == "auto" else getattr(params, name)
                for name in SWITCHES}
    if kind != "cuda" and settings["cuda_graphs"]:
        raise UserError("Param 'cuda_graphs' is true but the device is not a CUDA GPU; set cuda_graphs=auto or false.")
    if settings["cuda_graphs"] and not settings["compile"]:
        raise UserError("Param 'cuda_graphs' needs compile (torch.compile captures the graphs); "
                        "set compile=true or cuda_graphs=false.")
    if kind == "cuda" and settings["compile"] and importlib.util.find_spec("triton") is None:
        if params.compile is True:
            raise UserError("Param 'compile' is true but triton, which torch.compile needs on a GPU, is not "
                            "installed; install it or set compile=false.")
        settings["compile"], settings["cuda_graphs"] = False, False  # auto falls back to eager
    settings["threads"] = params.threads
    return settings


def prepare(model: torch.nn.Module, params: Params, device: torch.device | str,
            settings: dict[str, object] | None = None, say: Callable[[str], object] = print) -> dict[str, object]:
    """Apply the run-wide settings once, before the first step: threads, glibc's freed memory,
    memory format, the CPU kernels (kernels.plug_in: only where the model's layers match them) and compilation of
    `model`, in place, so state_dict keys and checkpoints are unchanged. Returns the settings in force (a kernel
    switch that did not fit the model turned off); build the optimiser afterwards with `adam_options(settings)`."""
    settings = apply_process_settings(params, device, settings)
    if settings["channels_last"]:
        model.to(memory_format=torch.channels_last)
    settings = kernels.plug_in(model, settings, say)
    if settings["compile"]:
        model.compile(mode="reduce-overhead" if settings["cuda_graphs"] else None)
    return settings


def apply_process_settings(params: Params, device: torch.device | str,
                           settings: dict[str, object] | None = None) -> dict[str, object]:
    """The process-wide part of `prepare` (threads, glibc's freed memory); returns the settings."""
    settings = resolve(params, device) if settings is None else settings
    if settings["threads"] > 0:
        torch.set_num_threads(settings["threads"])
    if torch.device(device).type == "cpu":
        keep_freed_memory()
    return settings


# glibc's malloc hands blocks over 128 KiB to mmap and gives freed memory at the top of the heap back to the OS
# once more than 2x the last such block is free. A training step frees its activations (8 MiB each at batch 64)
# every step, so with the defaults every step faults its ~100 MiB in again, page by page, zeroed by the kernel:
# on the 2-core AMD EPYC without AMX, 30 s of system time in a 54 s bench.py run. Keeping freed memory in the
# heap cut the plain fp32 step from 81-95 ms to 58-64 ms (same model, batch 64, separate processes, interleaved).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD_MAX = 32 << 20                # the largest value glibc accepts on 64-bit


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed blocks up to 32 MiB in the heap for reuse instead of returning them to the
    OS; True where it took effect (Linux with glibc). Process-wide, the same arithmetic, more resident memory."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        kept = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
        return bool(kept)
    except (OSError, AttributeError):  # another C library (musl) or none under that name
        return False


def adam_options(settings: dict[str, object]) -> dict[str, object]:
    """Keyword arguments for torch.optim.Adam: the fused kernel (one launch for all parameters) when switched on."""
    return {"fused": True} if settings["fused_adam"] else {}


def autocast(x: torch.Tensor, params: Params) -> contextlib.AbstractContextManager:
    """bf16 autocast around the forward pass when amp resolves to bf16; a no-op context otherwise."""
    if resolve_one("amp", params, x.device) == "bf16":
        return torch.autocast(x.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_memory_format(x: torch.Tensor, params: Params) -> torch.Tensor:
    """The batch in channels-last layout when the model is, so the first convolution needs no conversion."""
    if resolve_one("channels_last", params, x.device):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def resolve_one(name: str, params: Params, device: torch.device) -> bool | str:
    """One switch's resolved value, cheap enough to call every step (no checks; resolve() did them at start-up)."""
    value = getattr(params, name)
    return auto_value(device.type, name) if value == "auto" else value
