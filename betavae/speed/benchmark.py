"""What bench.py measures: the loops' speed interleaved window by window, packs against one model after another, and
each switch's effect on the final loss (--check-numerics)."""
from __future__ import annotations

import dataclasses
import statistics
import time

import torch

from betavae.scale import packing
from betavae.speed import switches
from betavae.speed.bench_loops import LOOP_NAMES, LoopProcess, Ours, timed

def bench_batch_size(images: torch.Tensor, params, device: torch.device, args) -> dict:
    """Time the loops (each in its own process, see LOOP_NAMES) interleaved window by window, rotating which
    goes first, so that load from other processes falls on all alike; medians over windows."""
    names = [name for name in LOOP_NAMES if device.type == "cpu" or "keep_freed_memory" not in name]
    loops = {name: LoopProcess(name, params, device, len(images), params.seed) for name in names}
    try:
        figures = {name: {"warmup_s": loop.ask("time", args.warmup)[0], "rates": [], "cpu": [], "peak": 0.0}
                   for name, loop in loops.items()}
        for window in range(args.windows):
            for name in names[window % len(names):] + names[:window % len(names)]:
                seconds, cpu_seconds, peak = loops[name].ask("time", args.steps)
                figures[name]["rates"].append(args.steps / seconds)
                figures[name]["cpu"].append(1000 * cpu_seconds / args.steps)
                figures[name]["peak"] = max(figures[name]["peak"], peak)
        finals = {name: loop.ask("finish") for name, loop in loops.items()}
    finally:
        for loop in loops.values():
            loop.close()
    result, memory_key = {}, "gpu_max_allocated_mib" if device.type == "cuda" else "host_rss_mib"
    for name, figure in figures.items():
        rate = statistics.median(figure["rates"])
        result[name] = {"steps_per_s": round(rate, 2), "images_per_s": round(rate * params.batch_size, 1),
                        "window_steps_per_s": [round(r, 2) for r in figure["rates"]],
                        "cpu_ms_per_step": round(statistics.median(figure["cpu"]), 1),
                        "warmup_s": round(figure["warmup_s"], 2),
                        memory_key: round(figure["peak"], 1), "pid": finals[name][2]}
    for suffix, base in (("", "reference"), ("_keep_freed_memory", "reference + keep_freed_memory")):
        if base in result:
            result["ratio" + suffix] = round(result["ours"]["steps_per_s"] / result[base]["steps_per_s"], 2)
            result["ratio_cpu_time" + suffix] = round(result[base]["cpu_ms_per_step"]
                                                      / result["ours"]["cpu_ms_per_step"], 2)
    result["settings"] = finals["ours"][1]
    result["final_loss"] = {name: round(final[0], 3) for name, final in finals.items()}
    return result


def bench_pack(images: torch.Tensor, params, device: torch.device, sizes: list[int], args) -> dict:
    """For each K: K models packed (packed.Pack) against the same K models trained one after another with
    loop.train_step, windows interleaved (alternating which goes first); medians of model-steps/s."""
    results = {}
    for size in sizes:
        timers = {"one_after_another": packing.timer(params, images, device, size, packed=False),
                  "packed": packing.timer(params, images, device, size, packed=True)}
        rates = {name: [] for name in timers}
        for name, timer in timers.items():
            timer(args.warmup)
        for window in range(args.windows):
            for name in (("one_after_another", "packed") if window % 2 == 0 else ("packed", "one_after_another")):
                rates[name].append(timers[name](args.steps))
        result = {name: round(statistics.median(values), 2) for name, values in rates.items()}
        result["ratio"] = round(result["packed"] / result["one_after_another"], 2)
        results[size] = result
    return results


# --check-numerics: each switch alone on top of plain fp32, then everything "auto" picks, all on the same batches.
# "plain fp32, 1 thread" changes nothing but the order of floating-point sums: the rounding-noise floor.
NUMERICS = {
    "plain fp32": {},
    "plain fp32, 1 thread": {"threads": 1},
    "fused_adam": {"fused_adam": True},
    "channels_last": {"channels_last": True},
    "compile": {"compile": True},
    "amp bf16": {"amp": "bf16"},
    "fused_deconv": {"fused_deconv": True},
    "fused_conv": {"fused_conv": True},
    "ours (auto)": None,
}
PLAIN = {switch: False for switch in switches.SWITCHES}
# The check's learning rate unless --set lr=... is given: the demo's 5e-4, at which 2,000 steps reach the slow
# phase of training. At the default 1e-4 step 2,000 falls mid-descent, where which latent switches on when is
# chaotic: there channels_last alone (the same arithmetic, summed in another order) moved the final loss by 21%,
# fused Adam by 3.9%, compile by 18% and bf16 by 28% (bench.py --check-numerics --set lr=1e-4, 2-core CPU).
NUMERICS_LR = 5e-4


def check_numerics(images: torch.Tensor, params, device: torch.device, steps: int,
                   names: list[str] | None = None) -> dict:
    """Final loss (mean over the last log_every steps) of the same run under each switch (or only `switches`;
    plain fp32 and auto always run), and its relative difference to plain fp32; the issue's bar is 1%."""
    results, threads = {}, torch.get_num_threads()
    rows = {name: overrides for name, overrides in NUMERICS.items()
            if not overrides or names is None or set(overrides) & set(names)}
    for name, overrides in rows.items():
        torch.set_num_threads(threads)  # a row that set its own thread count does not carry it over
        config = params if overrides is None else dataclasses.replace(params, **{**PLAIN, **overrides})
        start = time.perf_counter()
        loop = Ours(images, config, device, params.seed)
        timed(loop, steps, device)
        loss = loop.final_loss()
        plain = results.get("plain fp32", {}).get("final_loss", loss)
        results[name] = {"final_loss": round(loss, 4),
                         "relative_difference": round(abs(loss - plain) / abs(plain), 7),
                         "seconds": round(time.perf_counter() - start, 1)}
        print(f"{name:>15}: final loss {loss:.4f}  relative difference to plain fp32 "
              f"{results[name]['relative_difference']:.3%}  ({results[name]['seconds']:.0f} s)", flush=True)
    torch.set_num_threads(threads)
    return results
