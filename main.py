"""Train a β-VAE: python main.py [--preset NAME] [--config FILE.yaml] [--set key=value ...] [--resume RUN_DIR].

With no arguments it trains the published setting: Higgins et al.'s β-VAE (β = 4) on dSprites for 300,000 steps,
batch 64, Adam 1e-4 (Locatello et al. 2019). `--preset demo` trains a CPU-sized run in minutes (the README gives the measured time).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from betavae.listing import param_table, preset_list
from params import Params, UserError, apply_overrides, build_params, parse_assignment, validate

START = time.perf_counter()  # torch and the rest load after the command line is read: the first step's time counts them


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"presets:\n{preset_list()}\n\nEvery param is documented by its comment in params.py; "
               f"python main.py --list-params prints them by section with their types and defaults.")
    parser.add_argument("--preset", help="a named preset (listed below); default none: the published β-VAE on "
                                         "dSprites")
    parser.add_argument("--config", help="YAML file of param overrides (a run's params.yaml works)")
    parser.add_argument("--set", dest="assignments", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override params, e.g. --set steps=10 beta=2; repeatable; applied last")
    parser.add_argument("--list-params", action="store_true",
                        help="print every param by section with its type, default and meaning")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    return parser.parse_args(argv)


def resumed_params(resume: str, assignments: list[str]) -> tuple[str, dict, Params]:
    """The run folder, its checkpoint and its params with --set applied (lr, steps, ...), checked for a resume."""
    from betavae.checkpoints import load_checkpoint
    from betavae.training.run_folder import check_resumable

    run_dir = os.path.dirname(resume) or "." if os.path.isfile(resume) else resume  # the folder or its checkpoint
    checkpoint = load_checkpoint(os.path.join(run_dir, "checkpoint.pt"))
    params = apply_overrides(Params(), checkpoint["params"], f"{run_dir}/checkpoint.pt")
    params = apply_overrides(params, dict(parse_assignment(a) for a in assignments), "--set")
    validate(params)
    check_resumable(checkpoint, params)
    return run_dir, checkpoint, params


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.list_params:
        print(param_table())
        return 0
    from betavae.errors import DataError
    from betavae.scale import ddp
    from betavae.speed import switches
    from betavae.training import loop, run_folder
    from data import make_dataset

    loop.START = START
    try:
        checkpoint = None
        if args.resume:
            if args.preset or args.config:
                raise UserError("--resume continues a run with its own params; drop --preset/--config "
                                "(use --set, e.g. --set steps=N, to change a value).")
            run_dir, checkpoint, params = resumed_params(args.resume, args.assignments)
        else:
            params = build_params(args.preset, args.config, args.assignments)
        device = run_folder.resolve_device(params.device)
        if ddp.launched():  # torchrun: one model, data-parallel over its processes (betavae/scale/ddp.py)
            device = ddp.setup(params.batch_size, device)
        settings = switches.resolve(params, device)  # once; a bad combination stops before the run folder exists
        dataset = make_dataset(params, device)  # before the run folder, so bad data leaves no empty run behind
        if args.resume:
            run_folder.check_weights_fit(checkpoint, dataset.channels, params.latent_dim, run_dir)
        locks = []

        def claim_run_dir() -> str:
            folder = run_dir if args.resume else run_folder.new_run_dir(params, args.preset)
            locks.append(run_folder.lock_run_dir(folder))  # held until this process ends
            run_folder.clear_stale_temporaries(folder)
            run_folder.write_params(folder, params, device, argv, settings)
            return folder
        run_dir = ddp.share_run_dir(claim_run_dir) if ddp.world_size() > 1 else claim_run_dir()
        try:
            return loop.train(params, dataset, run_dir, device, checkpoint, settings)
        finally:
            for lock in locks:
                lock.close()
            ddp.finish()
    except (UserError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
