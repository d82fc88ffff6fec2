"""Running a sweep's points: finished ones skipped, partial ones resumed, packable ones trained K at a time."""
from __future__ import annotations

import dataclasses
import os
import shlex
import time

import yaml

from betavae.checkpoints import load_checkpoint
from betavae.errors import DataError, UserError
from betavae.scale import packed, packing
from betavae.scale.sweep_spec import DATA_KEYS, Point, Result
from betavae.training import loop, run_folder
from betavae.sources.interface import make_dataset
from params import Params

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


def sweep_steps(pending: list[Point]) -> int:
    """The model-steps of a sweep's unfinished points, which decide whether pack=auto measures (the plan and the run
    take the same figure, so they form the same packs)."""
    return sum(point.params.steps for point in pending)


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

    total = sweep_steps(pending)
    while pending:
        group = [pending.pop(0)]
        try:
            size = packing.resolve_pack(group[0].params, dataset_of(group[0]), device, total)
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


def reproducing_argv(params: Params) -> list[str]:
    """main.py's arguments for these resolved params: `--set` for every param that differs from the defaults (out_dir
    and run_name aside), so the command recorded in a point's params.yaml, run as written, trains with the point's
    params whatever preset, config and overrides made them."""
    default, words = Params(), []
    for field in dataclasses.fields(Params):
        value = getattr(params, field.name)
        if field.name not in ("out_dir", "run_name") and value != getattr(default, field.name):
            text = "null" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))
            words.append(shlex.quote(f"{field.name}={text}"))
    return ["--set", *words] if words else []


def run_group(group: list[Point], dataset_of, device, out: str, say) -> list[Result]:
    """One point alone (loop.train) or several as a pack (packed.train_pack), each folder locked and recorded."""
    folders = [os.path.join(out, point.name) for point in group]
    previous = [read_status(folder).get("wall_s", 0.0) for folder in folders]
    start, codes, reasons, locks = time.perf_counter(), [1] * len(group), [""] * len(group), []
    loop.START, loop.SINCE = start, "after the point's start"  # this run's start, not the sweep's
    try:
        dataset = dataset_of(group[0])
        checkpoints = []
        for point, folder in zip(group, folders):
            has_checkpoint = os.path.isfile(os.path.join(folder, "checkpoint.pt"))
            checkpoints.append(load_checkpoint(os.path.join(folder, "checkpoint.pt")) if has_checkpoint else None)
            os.makedirs(folder, exist_ok=True)
            argv = ["--resume", folder] if has_checkpoint else reproducing_argv(point.params)
            locks.append(run_folder.lock_run_dir(folder))  # one process per point, also under torchrun
            run_folder.clear_stale_temporaries(folder)
            run_folder.write_params(folder, point.params, device, argv)
        if len(group) == 1:
            codes = [loop.train(group[0].params, dataset, folders[0], device, checkpoints[0])]
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
