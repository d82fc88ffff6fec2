"""Time main.py's training step against the usual DataLoader loop: python bench.py [--device D] [--check-numerics]."""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import multiprocessing
import os
import platform
import resource
import signal
import statistics
import sys
import time

import numpy as np
import torch
import yaml

import main
import packed
import performance
from data import DATASET_SIZE, DSprites, all_latent_classes, render_dsprites
from losses import OBJECTIVES
from models import VAE
from params import UserError, build_params


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where both loops train")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[64, 256], help="batch sizes to time")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per window")
    parser.add_argument("--windows", type=int, default=5, help="timed windows per loop; the median is reported")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per loop first (compilation included)")
    parser.add_argument("--images", type=int, default=4096, help="size of the pre-rendered dSprites subset")
    parser.add_argument("--set", dest="assignments", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override a param for 'ours' (e.g. --set compile=true amp=false), as in main.py")
    parser.add_argument("--out", help="YAML file for the figures (default predictions/bench_<device>_<time>.yaml)")
    parser.add_argument("--check-numerics", nargs="*", metavar="SWITCH", choices=[*performance.SWITCHES, "threads"],
                        help="instead of timing: train plain fp32 and each speed switch (or only the SWITCHes named, "
                             "e.g. --check-numerics amp) and everything auto picks, on the same batches, and compare "
                             "their final losses (lr 5e-4 unless --set lr=... is given)")
    parser.add_argument("--pack", help="comma-separated pack sizes K (e.g. 1,2,4,8): model-steps/s of K models packed "
                        "against the same K one after another, at the first --batch-size")
    parser.add_argument("--numerics-steps", type=int, default=2000, help="steps of each --check-numerics run")
    return parser.parse_args(argv)


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
        torch.manual_seed(seed)
        params = dataclasses.replace(params, fast_bce=False)  # torch's own binary_cross_entropy_with_logits
        self.model = VAE(1, params.latent_dim).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=params.lr,
                                          betas=(params.adam_beta1, params.adam_beta2))
        dataset = torch.utils.data.TensorDataset(images.cpu())
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=params.batch_size, shuffle=True, drop_last=True,
                                                  generator=torch.Generator().manual_seed(seed))
        self.batches, self.objective, self.params, self.device, self.step = iter(self.loader), \
            OBJECTIVES[params.objective], params, device, 0
        self.flush_denormal, self.threads, self.losses = False, torch.get_num_threads(), []

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
    """main.py's loop: batches gathered by index from images resident on the device, main.train_step with the
    params' speed settings, and the logged terms summed on the device and read every log_every steps."""

    def __init__(self, images: torch.Tensor, params, device: torch.device, seed: int):
        torch.manual_seed(seed)
        self.model = VAE(1, params.latent_dim).to(device)
        self.settings = performance.prepare_performance(self.model, params, device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=params.lr,
                                          betas=(params.adam_beta1, params.adam_beta2),
                                          **performance.adam_options(self.settings))
        self.images, self.objective, self.params, self.step = images, OBJECTIVES[params.objective], params, 0
        self.index_generator = torch.Generator(device).manual_seed(seed)
        self.flush_denormal = self.settings["flush_denormal"]
        self.threads = self.settings["threads"] or torch.get_num_threads()
        self.totals, self.window, self.losses = {}, 0, []

    def run(self, steps: int) -> None:
        for _ in range(steps):
            indices = torch.randint(len(self.images), (self.params.batch_size,), generator=self.index_generator,
                                    device=self.images.device)
            terms = main.train_step(self.model, self.optimizer, self.objective, self.images[indices], self.step,
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


def timed(loop, steps: int, device: torch.device) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of this process, peak memory in MiB) for `steps` steps of `loop`, run under
    its own process-wide settings. CPU time is the steadier figure on a shared machine: other processes
    stretch the wall clock but not the work this one does."""
    torch.set_flush_denormal(loop.flush_denormal)
    torch.set_num_threads(loop.threads)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    loop.run(steps)
    sync(device)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else rss_mib()
    return seconds, cpu_seconds, peak


# The timed loops. Each runs in a process of its own, as each would run as its own program: the settings ours
# applies process-wide (threads, denormal flushing, glibc's malloc keeping freed memory) must not reach the
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
            performance.keep_freed_memory()
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
    main.train_step, windows interleaved (alternating which goes first); medians of model-steps/s."""
    results = {}
    for size in sizes:
        timers = {"one_after_another": packed.timer(params, images, device, size, packed=False),
                  "packed": packed.timer(params, images, device, size, packed=True)}
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


def print_pack_table(record: dict) -> None:
    print(f"hardware: {record['hardware']}; batch {record['pack_batch_size']} per model; model-steps/s, "
          f"median of {record['pack_windows']} windows")
    print("| K | one after another | packed | packed / one after another |")
    print("|---:|---:|---:|---:|")
    for size, result in record["pack"].items():
        print(f"| {size} | {result['one_after_another']:.1f} | {result['packed']:.1f} | {result['ratio']:.2f} |")


# --check-numerics: each switch alone on top of plain fp32, then everything "auto" picks, all on the same batches.
# "plain fp32, 1 thread" changes nothing but the order of floating-point sums: the rounding-noise floor.
NUMERICS = {
    "plain fp32": {},
    "plain fp32, 1 thread": {"threads": 1},
    "flush_denormal": {"flush_denormal": True},
    "fused_adam": {"fused_adam": True},
    "channels_last": {"channels_last": True},
    "compile": {"compile": True},
    "amp bf16": {"amp": "bf16"},
    "output_gemm": {"output_gemm": True},
    "fused_deconv": {"fused_deconv": True},
    "fused_conv": {"fused_conv": True},
    "fast_bce": {"fast_bce": True},
    "ours (auto)": None,
}
PLAIN = {switch: False for switch in performance.SWITCHES}
# The check's learning rate unless --set lr=... is given: the demo's 5e-4, at which 2,000 steps reach the slow
# phase of training. At the default 1e-4 step 2,000 falls mid-descent, where which latent switches on when is
# chaotic: there channels_last alone (the same arithmetic, summed in another order) moved the final loss by 21%,
# fused Adam by 3.9%, compile by 18% and bf16 by 28% (bench.py --check-numerics --set lr=1e-4, 2-core CPU).
NUMERICS_LR = 5e-4


def check_numerics(images: torch.Tensor, params, device: torch.device, steps: int,
                   switches: list[str] | None = None) -> dict:
    """Final loss (mean over the last log_every steps) of the same run under each switch (or only `switches`;
    plain fp32 and auto always run), and its relative difference to plain fp32; the issue's bar is 1%."""
    results, threads = {}, torch.get_num_threads()
    rows = {name: overrides for name, overrides in NUMERICS.items()
            if not overrides or switches is None or set(overrides) & set(switches)}
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


def print_table(record: dict) -> None:
    print(f"hardware: {record['hardware']}")
    ready = record["data"]
    print(f"dSprites ready: {ready['dsprites_ready_s']:.2f} s, {ready['dsprites_ready_rss_mib']:+.0f} MiB host; "
          f"{ready['subset_images']} images pre-rendered: {ready['subset_render_s']:.2f} s, "
          f"{ready['subset_rss_mib']:+.0f} MiB host")
    memory = "GPU max MiB" if record["device"] == "cuda" else "host RSS MiB"
    print(f"| batch | loop | steps/s | images/s | ours / this loop | CPU ms/step | ours / this loop (CPU time) "
          f"| warm-up s | {memory} |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for batch_size, result in record["results"].items():
        for name in (name for name in LOOP_NAMES if name in result):
            figures, suffix = result[name], "_keep_freed_memory" if "keep_freed_memory" in name else ""
            peak = figures.get("gpu_max_allocated_mib", figures.get("host_rss_mib"))
            ratio, ratio_cpu = ("", "") if name == "ours" else \
                (f"{result['ratio' + suffix]:.2f}", f"{result['ratio_cpu_time' + suffix]:.2f}")
            print(f"| {batch_size} | {name} | {figures['steps_per_s']:.1f} | {figures['images_per_s']:.0f} | {ratio} | "
                  f"{figures['cpu_ms_per_step']:.0f} | {ratio_cpu} | {figures['warmup_s']:.1f} | {peak:.0f} |")
    print("ours settings: " + ", ".join(f"{k}={v}" for k, v in record["settings"].items()))


def main_bench(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        params = build_params(None, None, [f"device={args.device}", *args.assignments])
        device = main.resolve_device(params.device)
        performance.resolve(params, device)
        if min(args.batch_size) <= 0 or args.steps <= 0 or args.windows <= 0 or args.warmup < 0 or args.images <= 0:
            raise UserError("--batch-size, --steps, --windows and --images must be positive and --warmup not negative.")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    images, ready = prepare_data(args.images, params.seed, device)
    record = {"command": " ".join(["python", "bench.py", *(sys.argv[1:] if argv is None else argv)]),
              "git_commit": main.git_commit(), "device": device.type, "hardware": hardware(device), "data": ready}
    if args.pack:
        try:
            sizes = [int(size) for size in args.pack.split(",")]
            if min(sizes) < 1:
                raise ValueError
        except ValueError:
            print("error: --pack takes positive pack sizes separated by commas, e.g. --pack 1,2,4,8.", file=sys.stderr)
            return 2
        params = dataclasses.replace(params, batch_size=args.batch_size[0])
        record.update(pack_batch_size=params.batch_size, pack_windows=args.windows, pack_steps=args.steps,
                      pack=bench_pack(images, params, device, sizes, args))
        print_pack_table(record)
    elif args.check_numerics is not None:
        if not any(assignment.split("=")[0].strip() == "lr" for assignment in args.assignments):
            params = dataclasses.replace(params, lr=NUMERICS_LR)
        record["numerics_steps"], record["numerics_lr"] = args.numerics_steps, params.lr
        record["numerics"] = check_numerics(images, params, device, args.numerics_steps, args.check_numerics or None)
    else:
        record["results"] = {}
        for batch_size in args.batch_size:
            if batch_size > len(images):
                print(f"error: --batch-size {batch_size} is larger than --images {len(images)}.", file=sys.stderr)
                return 2
            record["results"][batch_size] = bench_batch_size(
                images, dataclasses.replace(params, batch_size=batch_size), device, args)
            record["settings"] = record["results"][batch_size].pop("settings")
        record["peak_host_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        print_table(record)
    out = args.out or os.path.join(params.out_dir, f"bench_{device.type}_"
                                                   f"{datetime.datetime.now():%Y%m%d-%H%M%S}.yaml")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        yaml.safe_dump(record, f, sort_keys=False)
    print(f"figures written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main_bench())
