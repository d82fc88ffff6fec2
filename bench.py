"""Time main.py's training step against the usual DataLoader loop: python bench.py [--device D] [--check-numerics]."""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import resource
import sys

import yaml

from params import SPEED_SWITCHES, UserError, build_params


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where both loops train (default auto)")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[64, 256],
                        help="batch sizes to time (default 64 256)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per window (default 10)")
    parser.add_argument("--windows", type=int, default=5,
                        help="timed windows per loop; the median is reported (default 5)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed steps per loop first, compilation included (default 3)")
    parser.add_argument("--images", type=int, default=4096,
                        help="size of the pre-rendered dSprites subset (default 4096)")
    parser.add_argument("--set", dest="assignments", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override a param for 'ours' (e.g. --set compile=true amp=false), as in main.py")
    parser.add_argument("--out", help="YAML file for the figures (default predictions/bench_<device>_<time>.yaml)")
    parser.add_argument("--check-numerics", nargs="*", metavar="SWITCH", choices=[*SPEED_SWITCHES, "threads"],
                        help="instead of timing: train plain fp32 and each speed switch (or only the SWITCHes named, "
                             "e.g. --check-numerics amp) and everything auto picks, on the same batches, and compare "
                             "their final losses (lr 5e-4 unless --set lr=... is given)")
    parser.add_argument("--pack", help="comma-separated pack sizes K (e.g. 1,2,4,8): model-steps/s of K models packed "
                        "against the same K one after another, at the first --batch-size")
    parser.add_argument("--disk", type=int, metavar="N",
                        help="instead: steps/s with batches gathered from N images in memory against the same N "
                             "memory-mapped from disk, page cache dropped (docs/speed.md); at the first --batch-size")
    parser.add_argument("--numerics-steps", type=int, default=2000,
                        help="steps of each --check-numerics run (default 2000)")
    return parser.parse_args(argv)


def print_pack_table(record: dict) -> None:
    print(f"hardware: {record['hardware']}; batch {record['pack_batch_size']} per model; model-steps/s, "
          f"median of {record['pack_windows']} windows")
    print("| K | one after another | packed | packed / one after another |")
    print("|---:|---:|---:|---:|")
    for size, result in record["pack"].items():
        print(f"| {size} | {result['one_after_another']:.1f} | {result['packed']:.1f} | {result['ratio']:.2f} |")


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
        for name in (name for name in ("reference", "reference + keep_freed_memory", "ours") if name in result):
            figures, suffix = result[name], "_keep_freed_memory" if "keep_freed_memory" in name else ""
            peak = figures.get("gpu_max_allocated_mib", figures.get("host_rss_mib"))
            ratio, ratio_cpu = ("", "") if name == "ours" else \
                (f"{result['ratio' + suffix]:.2f}", f"{result['ratio_cpu_time' + suffix]:.2f}")
            print(f"| {batch_size} | {name} | {figures['steps_per_s']:.1f} | {figures['images_per_s']:.0f} | {ratio} | "
                  f"{figures['cpu_ms_per_step']:.0f} | {ratio_cpu} | {figures['warmup_s']:.1f} | {peak:.0f} |")
    print("ours settings: " + ", ".join(f"{k}={v}" for k, v in record["settings"].items()))


def main_bench(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from betavae.speed import switches
    from betavae.speed.bench_loops import hardware, prepare_data
    from betavae.speed.benchmark import NUMERICS_LR, bench_batch_size, bench_pack, check_numerics
    from betavae.training.run_folder import git_commit, resolve_device

    try:
        params = build_params(None, None, [f"device={args.device}", *args.assignments])
        device = resolve_device(params.device)
        switches.resolve(params, device)
        if min(args.batch_size) <= 0 or args.steps <= 0 or args.windows <= 0 or args.warmup < 0 or args.images <= 0:
            raise UserError("--batch-size, --steps, --windows and --images must be positive and --warmup not negative.")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    images, ready = prepare_data(args.images, params.seed, device)
    record = {"command": " ".join(["python", "bench.py", *(sys.argv[1:] if argv is None else argv)]),
              "git_commit": git_commit(), "device": device.type, "hardware": hardware(device), "data": ready}
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
    elif args.disk:
        from betavae.speed.disk import bench_disk

        params = dataclasses.replace(params, batch_size=args.batch_size[0])
        record["disk"] = bench_disk(params, args.disk, args.steps, args.windows, params.out_dir)
        print("| batch | images | from memory | memory-mapped, from disk | disk / memory (per window pair) |")
        print("|---:|---:|---:|---:|---|")
        disk = record["disk"]
        print(f"| {params.batch_size} | {args.disk:,} | {disk['memory_steps_per_s']:.1f} | "
              f"{disk['disk_steps_per_s']:.1f} | {disk['disk_over_memory']:.2f} "
              f"({', '.join(f'{r:.2f}' for r in disk['ratio_per_window_pair'])}) |")
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
