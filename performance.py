"""Speed switches: resolve the params' "auto" performance settings per device and apply them to a run."""
from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import sys

import torch

from params import Params, UserError

SWITCHES = ("compile", "amp", "channels_last", "fused_adam", "cuda_graphs", "flush_denormal", "output_gemm",
            "fused_deconv", "fused_conv", "fast_bce")

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


# What "auto" means on each device type. CPU: measured with bench.py at batch 64 on the 2-core development
# machine (Xeon with AMX), each switch interleaved with the reference loop. amp=bf16: 1.65x the reference at
# batch 64 (0.98x without it; the decoder's output layer stays float32, see models.Decoder), final loss 0.9%
# from fp32 in `bench.py --check-numerics`, so on where the CPU has AMX. On a 2-core AMD EPYC with AVX-512 BF16
# and no AMX (quiet, before output_gemm and with the reference in ours' process): 1.40x the reference at batch 64
# and 1.73x at 256, against 1.07x and 1.31x in fp32, so on there too (numerics and the figures with each loop
# in its own process: README "Speed"). AVX2-only CPUs have no bf16 convolutions (not measured), so off.
# channels_last: 1.21x the reference under heavy load where the same run without it gave 0.98x; on a quieter machine about 1.05x with it and 0.99x without.
# compile: 0.86x after 59 s of compilation in fp32, and 2.30x against 2.50x without it in bf16, so off.
# flush_denormal and fused_adam: the same final loss as plain fp32 in `bench.py --check-numerics`; no
# speed difference separable from the noise, kept on because denormals, where they appear, cost x86 CPUs
# microcode-speed arithmetic. output_gemm (models.OneChannelTransposedConv): the 1-channel output layer as a matrix
# multiply, 9.6 -> 6.0 ms forward and backward at batch 64 on the 2-core AMD EPYC, the same function (a few float
# roundings apart); off on CUDA, whose cuDNN kernels were not measured. fused_deconv and fused_conv
# (models.ConvStack: the decoder's and the encoder's convolutions and ReLUs as one op each, ReLU masks applied in
# place, the transposed layers' backward through forward convolutions, which oneDNN runs faster) and fast_bce
# (losses.BernoulliNLL: torch's Bernoulli loss spends 1.5 ms in log1p where sigmoid and log take 0.4): on the 2-core
# AMD EPYC in float32 at batch 64, ours ran 37.1-40.7 steps/s with both stacks and 30.3-31.3 without them (bench.py,
# README "Speed"); the encoder's stack alone made no difference separable from the noise (38.1, 42.1 steps/s with it
# off) and stays on, the same function; all three off on CUDA (not measured). CUDA: the standard recipe for a small
# overhead-bound network, NOT measured here (no GPU was available): re-run bench.py on a GPU and change it if the
# figures disagree.
AUTO = {
    "cpu": {"compile": False, "amp": "bf16" if cpu_has_fast_bf16() else False, "channels_last": True,
            "fused_adam": True, "cuda_graphs": False, "flush_denormal": True, "output_gemm": True,
            "fused_deconv": True, "fused_conv": True, "fast_bce": True},
    "cuda": {"compile": True, "amp": "bf16", "channels_last": True, "fused_adam": True, "cuda_graphs": True,
             "flush_denormal": False, "output_gemm": False, "fused_deconv": False,
             "fused_conv": False, "fast_bce": False},
}


def resolve(params: Params, device: torch.device | str) -> dict[str, object]:
    """The settings a run on `device` uses: each "auto" replaced by AUTO's choice, each explicit value checked."""
    kind = torch.device(device).type
    defaults = AUTO.get(kind, AUTO["cpu"])  # any other backend gets the conservative CPU choices
    settings = {name: defaults[name] if getattr(params, name) == "auto" else getattr(params, name)
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


def prepare_performance(model: torch.nn.Module, params: Params, device: torch.device | str,
                        settings: dict[str, object] | None = None) -> dict[str, object]:
    """Apply the run-wide settings once, before the first step: threads, denormal flushing, memory format and
    compilation of `model` (in place, so state_dict keys and checkpoints are unchanged). Returns the resolved
    settings (`settings` when given, already resolved once at start-up); build the optimiser afterwards with
    `adam_options(settings)`."""
    settings = resolve(params, device) if settings is None else settings
    if settings["threads"] > 0:
        torch.set_num_threads(settings["threads"])
    # Weights and gradients drift into the denormal range late in training, and x86 CPUs handle denormals
    # in microcode, many times slower than normal floats; flushing them to zero costs no accuracy that matters here.
    torch.set_flush_denormal(settings["flush_denormal"])
    if torch.device(device).type == "cpu":
        keep_freed_memory()
    if settings["channels_last"]:
        model.to(memory_format=torch.channels_last)
    model.decoder.output_gemm = bool(settings["output_gemm"])
    model.decoder.fused_deconv = bool(settings["fused_deconv"])
    model.encoder.fused_conv = bool(settings["fused_conv"])
    if settings["compile"]:
        model.compile(mode="reduce-overhead" if settings["cuda_graphs"] else None)
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
    return AUTO.get(device.type, AUTO["cpu"])[name] if value == "auto" else value
