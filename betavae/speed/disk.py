"""What reading a memory-mapped dataset costs the training step (`python bench.py --disk N`): N random RGB images written
once as an .npy (as Shapes3D, MPI3D and Cars3D are kept), then training windows that gather each batch from an
in-memory copy and from the memory-mapped file alternate; before each disk window the file's pages are dropped from
the page cache (posix_fadvise DONTNEED), so its batches are read from the disk itself."""
from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np
import torch

from betavae import parts
from betavae.speed import switches
from betavae.training import loop


def _drop_cache(path: str) -> bool:
    """Ask the kernel to forget the file's cached pages; False where it cannot (no posix_fadvise)."""
    if not hasattr(os, "posix_fadvise"):
        return False
    with open(path, "rb") as file:
        os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return True


def bench_disk(params, count: int, steps: int, windows: int, folder: str | None = None, say=print) -> dict:
    """steps/s of the training step with batches from memory and from the memory-mapped file, windows alternating."""
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        path = os.path.join(scratch, "images.npy")
        say(f"writing {count:,} images ({count * 64 * 64 * 3 / 1e9:.2f} GB) to {path}")
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(count, 64, 64, 3))
        rng = np.random.default_rng(params.seed)
        for start in range(0, count, 8192):
            out[start:start + 8192] = rng.integers(0, 256, size=(min(8192, count - start), 64, 64, 3), dtype=np.uint8)
        out.flush()
        del out
        sources = {"memory": np.load(path), "disk": np.load(path, mmap_mode="r")}

        def prepare(model):
            return switches.adam_options(switches.prepare(model, params, device, say=lambda _: None))
        model, optimizer, objective = parts.build(params, 3, count, device, prepare)
        generator, rates, dropped = np.random.default_rng(params.seed + 1), {"memory": [], "disk": []}, True

        def window(images: np.ndarray, steps: int) -> float:
            started = time.perf_counter()
            for step in range(steps):
                rows = np.sort(generator.integers(count, size=params.batch_size))
                x = torch.from_numpy(np.ascontiguousarray(images[rows])).permute(0, 3, 1, 2).float().div_(255.0)
                loop.train_step(model, optimizer, objective, x, step, params)
            return steps / (time.perf_counter() - started)

        window(sources["memory"], 2)  # warm-up: kernels chosen, buffers allocated
        for k in range(windows):
            for name in (("memory", "disk") if k % 2 == 0 else ("disk", "memory")):
                if name == "disk":
                    dropped = _drop_cache(path) and dropped
                rates[name].append(window(sources[name], steps))
        del sources
    memory, disk = statistics.median(rates["memory"]), statistics.median(rates["disk"])
    return {"images": count, "batch_size": params.batch_size, "page_cache_dropped": dropped,
            "memory_steps_per_s": round(memory, 2), "disk_steps_per_s": round(disk, 2),
            "disk_over_memory": round(disk / memory, 3),
            "window_steps_per_s": {name: [round(r, 2) for r in values] for name, values in rates.items()},
            "ratio_per_window_pair": [round(d / m, 3) for d, m in zip(rates["disk"], rates["memory"])]}
