"""A sweep's points: a grid and zips of params expanded into named runs, and sweep.yaml that records them."""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import itertools
import os
import re
from dataclasses import dataclass, field

import yaml

from betavae.errors import UserError
from params import PRESETS, SWEEPS, Params, apply_overrides, load_yaml, parse_assignment, validate

# Params that decide which dataset is built: points agreeing on these share one dataset object.
DATA_KEYS = ("dataset", "data_dir", "data_seed", "celeba_crop", "celeba_loader", "num_workers", "download", "val_images",
             "device")


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
    spec = {"preset": None, "set": {}, "grid": {}, "zip": [], "sweep": None}

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
        spec["sweep"] = args.preset  # the report finds the published figures it reproduces by this name
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


def preset_points(name: str) -> list[Point]:
    """The points of the sweep preset `name` as `python sweep.py --preset name` expands them."""
    spec = load_spec(argparse.Namespace(preset=name, config=None, grid=[], zip=[], assignments=[]))
    return expand(base_params(spec), spec["grid"], spec["zip"])


def base_params(spec: dict) -> Params:
    params = Params()
    preset = spec["preset"]
    if preset is not None:
        if preset not in PRESETS:
            close = difflib.get_close_matches(preset, [*SWEEPS, *PRESETS], n=3, cutoff=0.3)
            raise UserError(f"Unknown preset '{preset}'; did you mean: {', '.join(close)}? (python sweep.py --help "
                            f"lists the sweep presets, python main.py --help the run presets)" if close else
                            f"Unknown preset '{preset}'; choose a run preset ({', '.join(PRESETS)}) or a sweep "
                            f"preset ({', '.join(SWEEPS)}).")
        params = apply_overrides(params, PRESETS[preset], f"preset '{preset}'")
    return apply_overrides(params, spec["set"], "--set")


def new_sweep_dir(params: Params, name: str) -> str:
    base = os.path.join(params.out_dir, name)
    folder, suffix = base, 1
    while os.path.exists(folder):
        suffix += 1
        folder = f"{base}-{suffix}"
    os.makedirs(folder)
    return folder


def write_spec(folder: str, base: Params, spec: dict, points: list[Point]) -> None:
    record = {"preset": spec["preset"], "sweep": spec.get("sweep"), "base": dataclasses.asdict(base), "grid": spec["grid"], "zip": spec["zip"],
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
