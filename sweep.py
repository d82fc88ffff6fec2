"""Train a grid of runs and compare them: python sweep.py [--preset P] [--grid k=a,b] [--zip ...] [--resume DIR].

Before training it prints its plan: the points, the packs they train in, their steps, and an estimate of the
training time on this device from a few timed steps (--no-estimate skips the timing).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys

from params import SWEEPS, UserError, validate


def gather_results(results: list, ddp) -> list:
    """Every rank's results, in rank order, on every rank (a barrier: rank 0 reports only after all are done)."""
    from betavae.scale.sweep_spec import Result

    try:
        everyone = ddp.gather(results)
    except RuntimeError:  # another rank was killed (torchrun stopping the job): this rank's points are saved
        return [*results, Result("", "", "stopped")]
    return [result for part in everyone for result in part]


def print_plan(points: list, folder: str, device, estimate: bool, world: int) -> None:
    """The plan (betavae/scale/plan.py); a failed measurement costs the estimate, never the sweep."""
    from betavae.scale import plan

    try:
        print(plan.describe(points, folder, device, estimate=estimate, ranks=world), flush=True)
    except Exception as error:  # noqa: BLE001  each point's own run reports what is wrong with it
        print(f"plan: {len(points)} points; no time estimate ({type(error).__name__}: {error})".splitlines()[0],
              flush=True)


def record_udr(folder: str) -> None:
    """UDR over the seeds of each setting (betavae/scale/udr_runs.py); a problem costs the UDR column, not the report."""
    from betavae.errors import DataError
    from betavae.scale.udr_runs import sweep_udr

    try:
        sweep_udr(folder)
    except (UserError, DataError) as error:
        print(f"udr skipped: {error}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from betavae.listing import sweep_list

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"sweep presets (params.SWEEPS):\n{sweep_list()}\n\nRun presets (python main.py --help) serve as a "
               f"base for --grid and --zip.")
    parser.add_argument("--preset", help="a sweep preset (listed below) or a run preset (params.PRESETS) as base")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="sweep one param over values; repeatable (points are the cartesian product)")
    parser.add_argument("--zip", action="append", nargs="+", default=[], metavar="KEY=V1,V2",
                        help="params whose values move together (lists of one length); repeatable")
    parser.add_argument("--config", help="YAML with keys preset, set, grid, zip")
    parser.add_argument("--set", dest="assignments", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="base param overrides; several after one flag; repeatable; applied last")
    parser.add_argument("--name", help="sweep folder name under out_dir (default: the preset or sweep_<time>)")
    parser.add_argument("--resume", metavar="DIR", help="finish the sweep in DIR (skips finished points)")
    parser.add_argument("--report", metavar="DIR", help="rebuild sweep.csv, summary.md, tradeoff.png and sweep.html "
                                                        "in DIR (and UDR where a setting's udr.yaml is missing)")
    parser.add_argument("--no-estimate", action="store_true",
                        help="print the plan without timing steps for its time estimate")
    return parser.parse_args(argv)


def main_(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from betavae.errors import DataError
    from betavae.pictures import sweep_report
    from betavae.scale import ddp
    from betavae.scale.sweep_spec import Result, base_params, expand, load_spec, new_sweep_dir, read_spec, write_spec
    from betavae.scale.sweeping import run_points
    from betavae.training.run_folder import resolve_device

    folder, error = None, None
    rank, world = ddp.launch_rank()
    try:
        if args.report:
            if not os.path.isfile(os.path.join(args.report, "sweep.yaml")):
                raise UserError(f"{args.report} is not a sweep folder (it has no sweep.yaml); give --report a folder "
                                f"written by sweep.py, e.g. predictions/<sweep>.")
            record_udr(args.report)
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
        device = resolve_device(base.device)
        if world > 1:  # only folder names and statuses travel between ranks; ranks finish at different times
            device = ddp.join_group(device, timeout=datetime.timedelta(hours=48))
        if rank == 0 and not args.resume:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            try:
                folder = new_sweep_dir(base, args.name or args.preset or f"sweep_{stamp}")
                write_spec(folder, base, spec, points)
            except UserError as failure:
                error = str(failure)
        if world > 1:
            folder, error = ddp.broadcast([folder, error])  # rank 0's choice; every rank writes into that folder
        if error:
            raise UserError(error)
        if rank == 0:
            print(f"sweep: {len(points)} points in {folder}" + (f", split over {world} ranks" if world > 1 else ""))
            print_plan(points, folder, device, not args.no_estimate, world)
        say = print if world == 1 else (lambda message: print(f"rank {rank}: {message}", flush=True))
        try:
            results = run_points(points[rank::world], device, out=folder, say=say)
        except KeyboardInterrupt:
            results = [Result("", "", "stopped")]
        if world > 1:
            results = gather_results(results, ddp)  # waits for every rank; only rank 0 goes on to report
    except (UserError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        results = [Result("", "", "stopped")]
    finally:
        ddp.finish()
    if rank != 0:
        return 130 if any(r.status == "stopped" for r in results) else (1 if any(r.status == "failed" for r in results)
                                                                        else 0)
    if any(r.status == "stopped" for r in results):
        launcher = "torchrun ... sweep.py" if world > 1 else "python sweep.py"
        print(f"sweep stopped (Ctrl-C or a stop signal) with every model checkpointed; continue with: {launcher} "
              f"--resume {folder}", file=sys.stderr)
        return 130
    record_udr(folder)
    sweep_report.write_report(folder)
    failed = [r.name for r in results if r.status == "failed"]
    print(f"sweep done: {len(results) - len(failed)}/{len(results)} points finished; comparison in "
          f"{folder}/sweep.html, per-setting mean ± std in {folder}/summary.md"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main_())

