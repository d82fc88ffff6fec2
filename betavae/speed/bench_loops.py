"""The loops bench.py times, each in a process of its own: the usual DataLoader loop (the reference) and ours."""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import platform
import signal
import time

import numpy as np
import torch

from betavae import parts
from betavae.sources.dsprites import DATASET_SIZE, all_latent_classes, render_dsprites
from betavae.sources.sprites import DSprites
from betavae.speed import switches
from betavae.training import loop

def rss_mib() -> float:
    """Current resident memory of this process (Linux /proc; 0 where it is not available)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return 0.0


def hardware(device: torch.device) -> str:
    """One line: the processor (or GPU), the cores and threads torch uses, and the torch version."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    line = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads"
    if device.type == "cuda":
        line = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}); host: {line}"
    return line


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def render_subset(count: int, seed: int, device: torch.device) -> torch.Tensor:
    """`count` dSprites images drawn without replacement by `seed`, rendered: float32 [N, 1, 64, 64] on device."""
    rows = np.random.default_rng(seed).choice(DATASET_SIZE, count, replace=False)
    images = torch.from_numpy(render_dsprites(all_latent_classes()[rows])).float().unsqueeze(1).to(device)
    sync(device)
    return images


def prepare_data(count: int, seed: int, device: torch.device) -> tuple[torch.Tensor, dict]:
    """A fixed random subset of dSprites rendered once: float32 [N, 1, 64, 64] on device, and what it cost."""
    rss, start = rss_mib(), time.perf_counter()
    DSprites(None, device)  # main.py's dataset: factor classes resident, images drawn per batch
    ready = {"dsprites_ready_s": round(time.perf_counter() - start, 3),
             "dsprites_ready_rss_mib": round(rss_mib() - rss, 1)}
    rss, start = rss_mib(), time.perf_counter()
    images = render_subset(count, seed, device)
    ready.update({"subset_images": count, "subset_render_s": round(time.perf_counter() - start, 3),
                  "subset_rss_mib": round(rss_mib() - rss, 1)})
    if device.type == "cuda":
        ready["subset_gpu_mib"] = images.numel() * images.element_size() / 2**20
    return images, ready


class Reference:
    """The loop most public β-VAE repositories use: DataLoader over a TensorDataset with shuffling, eager fp32,
    default memory format, zero_grad/backward/step, and the loss read by the host every step for its log."""

    def __init__(self, images: torch.Tensor, params, device: torch.device, seed: int):
        self.model, self.optimizer, self.objective = parts.build(dataclasses.replace(params, seed=seed), 1, len(images),
                                                                 device)
        dataset = torch.utils.data.TensorDataset(images.cpu())
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=params.batch_size, shuffle=True, drop_last=True,
                                                  generator=torch.Generator().manual_seed(seed))
        self.batches, self.params, self.device, self.step = iter(self.loader), params, device, 0
        self.threads, self.losses = torch.get_num_threads(), []

    def run(self, steps: int) -> None:
        for _ in range(steps):
            try:
                (x,) = next(self.batches)
            except StopIteration:  # an epoch ended: reshuffle, as `for epoch ...: for x in loader` does
                self.batches = iter(self.loader)
                (x,) = next(self.batches)
            x = x.to(self.device)
            x_logits, mu, logvar, z = self.model(x)
            loss = self.objective(x, x_logits, mu, logvar, z, self.step, self.params)["loss"]
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.losses.append(loss.item())
            self.step += 1


class Ours:
    """main.py's loop: batches gathered by index from images resident on the device, loop.train_step with the
    params' speed settings, and the logged terms summed on the device and read every log_every steps."""

    def __init__(self, images: torch.Tensor, params, device: torch.device, seed: int):
        self.settings = {}

        def prepare(model):
            self.settings.update(switches.prepare(model, params, device))
            return switches.adam_options(self.settings)
        self.model, self.optimizer, self.objective = parts.build(dataclasses.replace(params, seed=seed), 1, len(images),
                                                                 device, prepare)
        self.images, self.params, self.step = images, params, 0
        self.index_generator = torch.Generator(device).manual_seed(seed)
        self.threads = self.settings["threads"] or torch.get_num_threads()
        self.totals, self.window, self.losses = {}, 0, []

    def run(self, steps: int) -> None:
        for _ in range(steps):
            indices = torch.randint(len(self.images), (self.params.batch_size,), generator=self.index_generator,
                                    device=self.images.device)
            terms = loop.train_step(self.model, self.optimizer, self.objective, self.images[indices], self.step,
                                    self.params)
            self.step += 1
            for name, value in terms.items():  # as main.py: accumulate on the device, read every log_every steps
                self.totals[name] = self.totals.get(name, 0) + value.detach()
            self.window += 1
            if self.step % self.params.log_every == 0:
                self.losses.append((self.totals["loss"] / self.window).item())
                self.totals, self.window = {}, 0

    def final_loss(self) -> float:
        """Mean loss since the last read (or of the last logged window), read now."""
        if self.window:
            self.losses.append((self.totals["loss"] / self.window).item())
            self.totals, self.window = {}, 0
        return self.losses[-1]


def timed(loop_, steps: int, device: torch.device) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of this process, peak memory in MiB) for `steps` steps of `loop`, run under
    its own process-wide settings. CPU time is the steadier figure on a shared machine: other processes
    stretch the wall clock but not the work this one does."""
    torch.set_num_threads(loop_.threads)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    loop_.run(steps)
    sync(device)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else rss_mib()
    return seconds, cpu_seconds, peak


# The timed loops. Each runs in a process of its own, as each would run as its own program: the settings ours
# applies process-wide (threads, glibc's malloc keeping freed memory) must not reach the
# reference, nor the reference's allocations share a heap with ours. "reference + keep_freed_memory" is the
# reference loop with only glibc's malloc told to keep freed memory, as ours does on CPU: ours against it is the
# gain of the training step alone, ours against "reference" what a user of the reference loop would see.
LOOP_NAMES = ("reference", "reference + keep_freed_memory", "ours")


def loop_worker(name: str, params, device_name: str, count: int, seed: int, connection) -> None:
    """A benchmark loop in its own process: render the subset, build the loop, then answer the parent's commands
    ("time", steps) with timed()'s figures and ("finish", 0) with the final loss and ours' settings."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent stops us
    try:
        device = torch.device(device_name)
        if name == "reference + keep_freed_memory":
            switches.keep_freed_memory()
        images = render_subset(count, seed, device)
        loop = (Ours if name == "ours" else Reference)(images, params, device, seed)
        while True:
            try:
                command, steps = connection.recv()
            except EOFError:  # the parent closed the pipe (it stopped early): nothing left to answer
                return
            if command == "finish":
                loss = loop.final_loss() if isinstance(loop, Ours) else loop.losses[-1]
                connection.send(("ok", (loss, getattr(loop, "settings", None), os.getpid())))
                return
            connection.send(("ok", timed(loop, steps, device)))
    except BaseException as error:  # reported to the parent, which stops the benchmark with it
        connection.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        connection.close()


class LoopProcess:
    """The parent's handle on one loop_worker process."""

    def __init__(self, name: str, params, device: torch.device, count: int, seed: int):
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or heap inherited
        self.name, (self.connection, child) = name, context.Pipe()
        self.process = context.Process(target=loop_worker, args=(name, params, str(device), count, seed, child),
                                       daemon=True)
        self.process.start()
        child.close()

    def ask(self, command: str, steps: int = 0):
        self.connection.send((command, steps))
        try:
            status, answer = self.connection.recv()
        except EOFError:
            self.process.join(5)
            status, answer = "error", f"its process ended with exit code {self.process.exitcode}"
        if status == "error":
            raise RuntimeError(f"bench.py's {self.name} loop failed: {answer}")
        return answer

    def close(self) -> None:
        self.connection.close()  # a worker still waiting for a command sees the pipe end and returns
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
