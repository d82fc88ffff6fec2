"""Train a grid of runs and compare them: python sweep.py [--preset P] [--grid k=a,b] [--zip ...] [--resume DIR]."""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import os
import re
import sys
import time
from dataclasses import dataclass, field

import yaml

import main
import packed
import sweep_report
from data import DataError, make_dataset
from models import load_checkpoint
from params import PRESETS, SWEEPS, Params, UserError, apply_overrides, load_yaml, parse_assignment, validate

# Params that decide which dataset is built: points agreeing on these share one dataset object.
DATA_KEYS = ("dataset", "data_dir", "celeba_crop", "celeba_loader", "num_workers", "download", "val_images", "device")


@dataclass
class Point:
    name: str                      # the varying values, e.g. "beta=4,seed=1"; also the run folder's name
    params: Params                 # the full params of this run
    overrides: dict = field(default_factory=dict)  # the varying values only


@dataclass
class Result:
    name: str
    folder: str
    status: str                    # done | failed | stopped | skipped (finished in an earlier session)
    reason: str = ""
    wall_s: float = 0.0


def format_value(value) -> str:
    """Compact text for a point name: 4 not 4.0, 1e-05, true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("/", "_").replace(os.sep, "_")


def parse_values(text: str, flag: str) -> tuple[str, list]:
    """'key=a,b,c' → (key, [a, b, c]) with YAML types."""
    if "=" not in text:
        raise UserError(f"{flag} expects key=v1,v2,..., got '{text}'; write e.g. {flag} beta=1,4,16.")
    key, raw = text.split("=", 1)
    values = [parse_assignment(f"{key}={part}")[1] for part in raw.split(",")] if raw.strip() else []
    return key.strip(), [as_number(v) for v in values]


def as_number(value):
    """YAML 1.1 reads 1e-4 as text; a grid value that is a plain number is meant as one."""
    if isinstance(value, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", value.strip()):
        return float(value)
    return value


def expand(base: Params, grid: dict[str, list], zips: list[dict[str, list]]) -> list[Point]:
    """Points = cartesian product of the grid's lists × each zip group's tuples; checked before anything runs."""
    axes = []                      # each axis: list of dicts of overrides that move together
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"Grid param '{key}' needs a non-empty list of values; write e.g. --grid {key}=1,2.")
        axes.append([{key: v} for v in values])
    for group in zips:
        lengths = {key: len(v) if isinstance(v, list) else -1 for key, v in group.items()}
        if not group or min(lengths.values()) <= 0 or len(set(lengths.values())) != 1:
            raise UserError(f"Zip params {', '.join(group) or '(none)'} need non-empty lists of one length, got "
                            f"lengths {', '.join(f'{k}: {n}' for k, n in lengths.items())}; make them equal.")
        axes.append([dict(zip(group, values)) for values in zip(*group.values())])
    axes.sort(key=lambda axis: "seed" in axis[0])  # seeds vary last, so names and folders group by setting
    keys = [k for axis in axes for k in axis[0]]
    if len(keys) != len(set(keys)):
        raise UserError(f"A param is swept twice ({', '.join(sorted({k for k in keys if keys.count(k) > 1}))}); "
                        f"list each param in one --grid or --zip only.")
    points, names = [], set()
    for combination in itertools.product(*axes):
        overrides = {k: v for part in combination for k, v in part.items()}
        params = apply_overrides(base, overrides, "the grid")
        validate(params)
        name = ",".join(f"{k}={format_value(params.__dict__[k])}" for k in keys) or "run"
        if name in names:
            raise UserError(f"Two grid points share the name '{name}'; remove the repeated value.")
        names.add(name)
        points.append(Point(name, dataclasses.replace(params, run_name=name), overrides))
    return points


def load_spec(args: argparse.Namespace) -> dict:
    """Preset (sweep or run) → YAML file → --grid/--zip → --set, as one spec: preset, set, grid, zip."""
    spec = {"preset": None, "set": {}, "grid": {}, "zip": []}

    def merge(part: dict, source: str) -> None:
        unknown = set(part) - {"preset", "set", "grid", "zip"}
        if unknown:
            raise UserError(f"{source} has unknown keys {', '.join(sorted(unknown))}; use preset, set, grid, zip.")
        spec["preset"] = part.get("preset", spec["preset"])
        spec["set"].update(part.get("set") or {})
        spec["grid"].update(part.get("grid") or {})
        zips = part.get("zip") or []
        spec["zip"].extend(zips if isinstance(zips, list) else [zips])

    if args.preset in SWEEPS:
        merge(SWEEPS[args.preset], f"sweep preset '{args.preset}'")
    elif args.preset:
        spec["preset"] = args.preset
    if args.config:
        merge(load_yaml(args.config), f"'{args.config}'")
    for text in args.grid:
        key, values = parse_values(text, "--grid")
        spec["grid"][key] = values
    for group in args.zip:
        spec["zip"].append(dict(parse_values(text, "--zip") for text in group))
    spec["set"].update(dict(parse_assignment(a) for a in args.assignments))
    return spec


def base_params(spec: dict) -> Params:
    params = Params()
    preset = spec["preset"]
    if preset is not None:
        if preset not in PRESETS:
            raise UserError(f"Unknown preset '{preset}'; choose a run preset ({', '.join(PRESETS)}) or a sweep "
                            f"preset ({', '.join(SWEEPS)}).")
        params = apply_overrides(params, PRESETS[preset], f"preset '{preset}'")
    return apply_overrides(params, spec["set"], "--set")


def point_finished(folder: str, params: Params) -> bool:
    """Finished: training returned 0 (status.yaml says done) and the checkpoint is at params.steps."""
    status = read_status(folder)
    if status.get("status") != "done" or not os.path.isfile(os.path.join(folder, "checkpoint.pt")):
        return False
    try:
        return load_checkpoint(os.path.join(folder, "checkpoint.pt"))["step"] == params.steps
    except UserError:                  # a broken checkpoint: the point is run again
        return False


def read_status(folder: str) -> dict:
    path = os.path.join(folder, "status.yaml")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return yaml.safe_load(f) or {}


def last_error(folder: str) -> str:
    path = os.path.join(folder, "run.log")
    lines = open(path).read().splitlines() if os.path.isfile(path) else []
    errors = [line for line in lines if line.startswith("error:")]
    return errors[-1][len("error:"):].strip() if errors else "training returned an error (see run.log)"


def start_step(folder: str):
    """The step of the point's checkpoint, None without one; a broken one gives a key of its own (never packed)."""
    path = os.path.join(folder, "checkpoint.pt")
    try:
        return load_checkpoint(path)["step"] if os.path.isfile(path) else None
    except UserError:
        return object()


def run_points(points: list[Point], device, *, out: str, say=print) -> list[Result]:
    """Train `points` on `device`, each in out/<name>/; finished ones are skipped, partial ones resume from their
    checkpoint. Where params.pack resolves to K > 1, points with the same packed.pack_key (and checkpoint step)
    train K at a time as one pack; otherwise one after another. Stops at the first Ctrl-C ('stopped')."""
    datasets, results, pending = {}, [], []
    for point in points:
        folder = os.path.join(out, point.name)
        if point_finished(folder, point.params):
            results.append(Result(point.name, folder, "skipped", wall_s=read_status(folder).get("wall_s", 0.0)))
        else:
            pending.append(point)

    def dataset_of(point: Point):
        key = tuple(getattr(point.params, k) for k in DATA_KEYS)
        if key not in datasets:
            datasets[key] = make_dataset(point.params, device)
        return datasets[key]

    def group_key(point: Point) -> tuple:
        return (packed.pack_key(point.params), tuple(getattr(point.params, k) for k in DATA_KEYS),
                start_step(os.path.join(out, point.name)))

    while pending:
        group = [pending.pop(0)]
        try:
            size = packed.resolve_pack(group[0].params, dataset_of(group[0]), device)
        except Exception:  # noqa: BLE001  the point's own run below reports what is wrong
            size = 1
        if size > 1:
            key = group_key(group[0])
            group += [point for point in pending if group_key(point) == key][:size - 1]
            pending = [point for point in pending if all(point is not member for member in group)]
        for point in group:
            say(f"sweep: point {points.index(point) + 1}/{len(points)}: {point.name}"
                + (f" (in a pack of {len(group)})" if len(group) > 1 else ""))
        results += run_group(group, dataset_of, device, out, say)
        if any(r.status == "stopped" for r in results):
            break
    return results


def run_group(group: list[Point], dataset_of, device, out: str, say) -> list[Result]:
    """One point alone (main.train) or several as a pack (packed.train_pack), each folder locked and recorded."""
    folders = [os.path.join(out, point.name) for point in group]
    previous = [read_status(folder).get("wall_s", 0.0) for folder in folders]
    start, codes, reasons, locks = time.perf_counter(), [1] * len(group), [""] * len(group), []
    try:
        dataset = dataset_of(group[0])
        checkpoints = []
        for point, folder in zip(group, folders):
            has_checkpoint = os.path.isfile(os.path.join(folder, "checkpoint.pt"))
            checkpoints.append(load_checkpoint(os.path.join(folder, "checkpoint.pt")) if has_checkpoint else None)
            os.makedirs(folder, exist_ok=True)
            argv = ["--resume", folder] if has_checkpoint else \
                [f"--set {k}={format_value(v)}" for k, v in point.overrides.items()]
            locks.append(main.lock_run_dir(folder))  # one process per point, also under torchrun
            main.clear_stale_temporaries(folder)
            main.write_params(folder, point.params, device, argv)
        if len(group) == 1:
            codes = [main.train(group[0].params, dataset, folders[0], device, checkpoints[0])]
        else:
            codes = packed.train_pack([p.params for p in group], dataset, folders, device, checkpoints)
        reasons = [last_error(folder) if rc == 1 else "" for folder, rc in zip(folders, codes)]
    except (UserError, DataError, Exception) as error:  # noqa: B014  one point's failure must not stop the rest
        for folder in folders:
            os.makedirs(folder, exist_ok=True)
        codes, reasons = [1] * len(group), [f"{type(error).__name__}: {error}".splitlines()[0]] * len(group)
    finally:
        for lock in locks:
            lock.close()
    results = []
    for point, folder, rc, reason, before in zip(group, folders, codes, reasons, previous):
        status = "done" if rc == 0 else ("stopped" if rc >= 128 else "failed")  # 128 + signal: Ctrl-C, SIGTERM
        wall = round(before + time.perf_counter() - start, 3)  # a pack's models share its wall time
        with open(os.path.join(folder, "status.yaml"), "w") as f:
            yaml.safe_dump({"status": status, "reason": reason, "wall_s": wall}, f, sort_keys=False)
        results.append(Result(point.name, folder, status, reason, wall))
        if status == "failed":
            say(f"sweep: point {point.name} failed: {reason}")
    return results


def new_sweep_dir(params: Params, name: str) -> str:
    base = os.path.join(params.out_dir, name)
    folder, suffix = base, 1
    while os.path.exists(folder):
        suffix += 1
        folder = f"{base}-{suffix}"
    os.makedirs(folder)
    return folder


def write_spec(folder: str, base: Params, spec: dict, points: list[Point]) -> None:
    record = {"preset": spec["preset"], "base": dataclasses.asdict(base), "grid": spec["grid"], "zip": spec["zip"],
              "points": [{"name": p.name, "overrides": p.overrides} for p in points]}
    with open(os.path.join(folder, "sweep.yaml"), "w") as f:
        yaml.safe_dump(record, f, sort_keys=False)


def read_spec(folder: str, assignments: list[str] = ()) -> tuple[Params, list[Point]]:
    """The sweep's base params and points from folder/sweep.yaml (plus --set overrides on every point)."""
    path = os.path.join(folder, "sweep.yaml")
    if not os.path.isfile(path):
        raise UserError(f"No sweep.yaml in '{folder}'; pass a folder written by sweep.py.")
    with open(path) as f:
        record = yaml.safe_load(f)
    base = apply_overrides(Params(), record["base"], path)
    extra = dict(parse_assignment(a) for a in assignments)
    points = []
    for entry in record["points"]:
        params = apply_overrides(apply_overrides(base, entry["overrides"], path), extra, "--set")
        validate(params)
        points.append(Point(entry["name"], dataclasses.replace(params, run_name=entry["name"]), entry["overrides"]))
    return base, points


def ranks() -> tuple[int, int]:
    """(rank, world size) under torchrun (env RANK, WORLD_SIZE); (0, 1) for a plain run."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else (0, 1)


def start_distributed(device):
    """Join torchrun's process group (gloo on CPU, nccl on CUDA, one GPU per local rank); returns this rank's device.
    Only folder names and statuses travel over it, never gradients. Ranks finish their points at different times,
    so the collectives wait up to 48 h instead of the default 30 min."""
    import torch
    import torch.distributed as dist
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=48))
    return device


def stop_distributed() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def share_folder(folder: str | None, error: str | None) -> tuple[str | None, str | None]:
    """Rank 0's sweep folder (or its error) sent to every rank."""
    import torch.distributed as dist
    message = [folder, error]
    dist.broadcast_object_list(message, src=0)
    return message[0], message[1]


def gather_results(results: list[Result]) -> list[Result]:
    """Every rank's results, in rank order, on every rank (a barrier: rank 0 reports only after all are done)."""
    import torch.distributed as dist
    everyone = [None] * dist.get_world_size()
    try:
        dist.all_gather_object(everyone, results)
    except RuntimeError:  # another rank was killed (torchrun stopping the job): this rank's points are saved
        return [*results, Result("", "", "stopped")]
    return [result for part in everyone for result in part]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", help="a sweep preset (params.SWEEPS) or a run preset (params.PRESETS) as base")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="sweep one param over values; repeatable (points are the cartesian product)")
    parser.add_argument("--zip", action="append", nargs="+", default=[], metavar="KEY=V1,V2",
                        help="params whose values move together (lists of one length); repeatable")
    parser.add_argument("--config", help="YAML with keys preset, set, grid, zip")
    parser.add_argument("--set", dest="assignments", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="base param overrides; several after one flag; repeatable; applied last")
    parser.add_argument("--name", help="sweep folder name under out_dir (default: the preset or sweep_<time>)")
    parser.add_argument("--resume", metavar="DIR", help="finish the sweep in DIR (skips finished points)")
    parser.add_argument("--report", metavar="DIR", help="rebuild sweep.csv, tradeoff.png and sweep.html in DIR")
    return parser.parse_args(argv)


def main_(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    folder, error = None, None
    rank, world = ranks()
    try:
        if args.report:
            sweep_report.write_report(args.report)
            print(f"report: {args.report}/sweep.html")
            return 0
        if args.resume:
            if args.preset or args.config or args.grid or args.zip or args.name:
                raise UserError("--resume continues a sweep with its own sweep.yaml; drop --preset/--config/--grid/"
                                "--zip/--name (use --set to change a value on every point).")
            folder = args.resume
            base, points = read_spec(folder, args.assignments)
        else:
            spec = load_spec(args)
            base = base_params(spec)
            validate(base)
            points = expand(base, spec["grid"], spec["zip"])
        device = main.resolve_device(base.device)
        if world > 1:
            device = start_distributed(device)
        if rank == 0 and not args.resume:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            try:
                folder = new_sweep_dir(base, args.name or args.preset or f"sweep_{stamp}")
                write_spec(folder, base, spec, points)
            except UserError as failure:
                error = str(failure)
        if world > 1:
            folder, error = share_folder(folder, error)  # rank 0's choice; every rank writes into that folder
        if error:
            raise UserError(error)
        if rank == 0:
            print(f"sweep: {len(points)} points in {folder}" + (f", split over {world} ranks" if world > 1 else ""))
        say = print if world == 1 else (lambda message: print(f"rank {rank}: {message}", flush=True))
        try:
            results = run_points(points[rank::world], device, out=folder, say=say)
        except KeyboardInterrupt:
            results = [Result("", "", "stopped")]
        if world > 1:
            results = gather_results(results)   # waits for every rank; only rank 0 goes on to report
    except (UserError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        results = [Result("", "", "stopped")]
    finally:
        stop_distributed()
    if rank != 0:
        return 130 if any(r.status == "stopped" for r in results) else (1 if any(r.status == "failed" for r in results)
                                                                        else 0)
    if any(r.status == "stopped" for r in results):
        launcher = "torchrun ... sweep.py" if world > 1 else "python sweep.py"
        print(f"sweep stopped (Ctrl-C or a stop signal) with every model checkpointed; continue with: {launcher} "
              f"--resume {folder}", file=sys.stderr)
        return 130
    sweep_report.write_report(folder)
    failed = [r.name for r in results if r.status == "failed"]
    print(f"sweep done: {len(results) - len(failed)}/{len(results)} points finished; comparison in "
          f"{folder}/sweep.html, per-setting mean ± std in {folder}/summary.md"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main_())
