"""Redraw the pictures of a run from any checkpoint: reconstructions, latent traversals and GIFs, factor pictures.

    python traverse.py predictions/<run>[/checkpoint.pt] [--out DIR] [--dims 0,3,7] [--from prior|posterior]
        [--range sigma:3|quantile:0.05|observed] [--gif] [--images N] [--indices 5,17] [--hide-inactive] [--assets]
        [--metrics [--select NAMES] [--no-dci] [--aam-estimator quadrature|published]] [--report]
    python traverse.py CHECKPOINT --aam-convergence   (AAM and MMIG against their estimator's counts)
    python traverse.py RUN RUN ... --udr      (UDR of runs trained on the same data, e.g. one setting's seeds)
    python traverse.py --download betaH_dsprites   (a released disentangling-vae model, into released/)

A checkpoint is a run folder or checkpoint.pt of main.py, a disentangling-vae results folder (model.pt +
specs.json) or a 1Konny/Beta-VAE checkpoint of BetaVAE_B (betavae/released.py); all draw and score alike.
"""
from __future__ import annotations

import argparse
import os
import sys

from params import Params, UserError, apply_overrides


def parse_indices(text: str, limit: int, what: str) -> list[int]:
    """'0,3,7' → [0, 3, 7], each in [0, limit); a UserError naming the valid range otherwise."""
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{what} '{text}' must be comma-separated whole numbers, e.g. 0,3,7.") from None
    bad = [n for n in numbers if not 0 <= n < limit]
    if bad or not numbers:
        raise UserError(f"{what} '{text}' is out of range: choose numbers from 0 to {limit - 1}.")
    return numbers


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Redraw every picture of a run from a checkpoint written by main.py.")
    parser.add_argument("checkpoint", nargs="*", help="a run folder or checkpoint.pt, a disentangling-vae results "
                                                      "folder, or a 1Konny/Beta-VAE checkpoint (several with --udr)")
    parser.add_argument("--download", metavar="NAME",
                        help="download disentangling-vae's released model NAME (VAE_dsprites, betaH_dsprites, "
                             "betaB_dsprites, factor_dsprites, btcvae_dsprites) into released/disentangling-vae/NAME")
    parser.add_argument("--out", help="output folder (default: <checkpoint folder>/traversals, or assets with --assets)")
    parser.add_argument("--dims", help="latents to traverse, in this order, e.g. 0,3,7 (default: all, sorted by KL)")
    parser.add_argument("--from", dest="origin", choices=("prior", "posterior"), default="prior",
                        help="traverse from z = 0 or from the posterior mean of each chosen image (default prior)")
    parser.add_argument("--range", dest="range_spec", default="sigma:3",
                        help="sigma:K (±K·σ), quantile:Q (Φ⁻¹(Q)…Φ⁻¹(1−Q), scaled by σ) or observed "
                             "(min…max of μ over the encoded images); default sigma:3")
    parser.add_argument("--gif", action="store_true", help="also write an animated GIF of each traversal")
    parser.add_argument("--images", type=int, default=8,
                        help="images shown in the reconstructions and traversed with --from posterior (default 8)")
    parser.add_argument("--indices", help="dataset indices of the images to use instead of random ones, e.g. 5,17")
    parser.add_argument("--hide-inactive", action="store_true", help="drop latents with KL below params.active_kl")
    parser.add_argument("--assets", action="store_true",
                        help="write the README's pictures under fixed names (reconstructions.png, traversal_grid.png "
                             "and .gif, heatmaps.png, factor_means.png, kl_per_dim.png)")
    parser.add_argument("--metrics", action="store_true",
                        help="also recompute the run's selection of scores (its `metrics` param) into "
                             "OUT/metrics.yaml, DCI included whatever the run's metrics_dci said")
    parser.add_argument("--select", metavar="NAMES",
                        help="with --metrics, the metrics to compute instead: default, all, or names joined by commas "
                             "(docs/metrics.md)")
    parser.add_argument("--udr", action="store_true",
                        help="UDR (Duan et al. 2020) of the runs named, trained on the same data: each run folder "
                             "gets a udr.yaml and a line is printed per run")
    parser.add_argument("--no-dci", action="store_true", help="with --metrics, leave out DCI (minutes on a CPU)")
    parser.add_argument("--aam-estimator", choices=("quadrature", "published"),
                        help="with --metrics, how AAM and MMIG estimate I[z; v] (default: the run's aam_estimator)")
    parser.add_argument("--aam-convergence", action="store_true",
                        help="print how AAM and MMIG move with their estimator and its counts (docs/metrics.md); "
                             "encodes every image, minutes on a CPU")
    parser.add_argument("--report", action="store_true",
                        help="only redraw the run's log plots and rewrite its report.html (no model is loaded)")
    return parser.parse_args(argv)


def make_output_folder(folder: str) -> None:
    """Create `folder` (and its parents) for writing, or raise one UserError saying why it cannot be."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"--out '{folder}' is an existing file; give a folder (new or existing) instead.")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise UserError(f"Cannot create the output folder '{folder}' ({error.strerror or error}); "
                        f"choose a writable place with --out.") from None
    if not os.access(folder, os.W_OK):
        raise UserError(f"The output folder '{folder}' is not writable; choose another with --out.")


def load(args: argparse.Namespace):
    """The checkpoint's model, params, dataset and images, and the output folder; UserError / DataError if wrong."""
    import torch

    from betavae.checkpoints import model_from_checkpoint
    from betavae.pictures.traversals import parse_range
    from betavae.released import open_checkpoint
    from data import make_dataset

    parse_range(args.range_spec)
    if args.images <= 0:
        raise UserError(f"--images must be positive, got {args.images}.")
    state, args.checkpoint = open_checkpoint(args.checkpoint)  # a run folder, as main.py --resume takes, or a peer's
    params = apply_overrides(Params(), state["params"], f"checkpoint '{args.checkpoint}'")
    dims = parse_indices(args.dims, state["latent_dim"], "--dims") if args.dims else None
    device = torch.device("cuda" if torch.cuda.is_available() and params.device != "cpu" else "cpu")
    model = model_from_checkpoint(state).to(device).eval()
    dataset = make_dataset(params, device)
    generator = torch.Generator().manual_seed(params.seed)
    x, _ = dataset.batch(torch.randint(len(dataset), (params.traverse_samples,), generator=generator))
    chosen = parse_indices(args.indices, len(dataset), "--indices") if args.indices else None
    x_shown = dataset.batch(torch.tensor(chosen))[0] if chosen else x[:args.images]
    run_dir = os.path.dirname(os.path.abspath(args.checkpoint))
    if args.assets and not os.path.isfile(os.path.join(run_dir, "log.csv")):
        raise UserError(f"--assets also plots the run's log, but there is no {os.path.join(run_dir, 'log.csv')}; "
                        f"pass a checkpoint inside its run folder.")
    folder = args.out or ("assets" if args.assets else os.path.join(run_dir, "traversals"))
    make_output_folder(folder)
    return state, params, model, dataset, x, x_shown, dims, run_dir, folder


def draw(args: argparse.Namespace, state, params, model, dataset, x, x_shown, dims, run_dir: str, folder: str):
    """Every picture the flags ask for, into `folder`."""
    import torch

    from betavae.pictures import factors, plots
    from betavae.pictures.traversals import (encode, save_gif, save_highest_mean_traversal, save_latent_grid,
                                             save_reconstructions, save_samples, traversal_values, traverse_rows)
    from losses import kl_normal

    tag = "" if args.assets else f"_step{state['step']:06d}"
    path = lambda name, extension="png": os.path.join(folder, f"{name}{tag}.{extension}")  # noqa: E731
    mu, logvar = encode(model, x)
    kl = kl_normal(mu, logvar).cpu()
    grid = dict(dims=dims, active_kl=params.active_kl, hide_inactive=args.hide_inactive, range_spec=args.range_spec)
    save_reconstructions(model, x_shown, path("reconstructions"))
    if args.origin == "prior":
        save_latent_grid(model, x, path("traversal_grid"), params.traverse_points, **grid,
                         gif_path=path("traversal_grid", "gif") if args.gif else "")
    else:
        # Each image's traversal starts from its own posterior; KL per dimension still comes from all of x.
        images = torch.cat([x_shown, x])
        for k in range(len(x_shown)):
            save_latent_grid(model, images, path(f"traversal_grid_posterior{k}"), params.traverse_points, **grid,
                             origin="posterior", image=k,
                             gif_path=path(f"traversal_grid_posterior{k}", "gif") if args.gif else "")
    if not args.assets:
        save_samples(model, state["latent_dim"], path("samples"))
        dim = save_highest_mean_traversal(model, x, path("traversal_highest_mean"), params.traverse_points)
        if args.gif:
            origin = torch.zeros_like(mu[0])
            values = traversal_values("observed", 0.0, params.traverse_points, origin, origin + 1, mu)
            save_gif(traverse_rows(model, origin, values, [dim]), path("traversal_highest_mean", "gif"))
    factors.save_factor_pictures(lambda images: encode(model, images)[0], dataset, folder, tag, kl, params.active_kl,
                                 max(params.factor_samples, 1), params.seed)
    if args.assets:
        plots.plot_kl_per_dim(plots.read_log(os.path.join(run_dir, "log.csv")), os.path.join(folder, "kl_per_dim.png"))


def report(run_dir: str) -> int:
    """Redraw a run's log plots and rewrite its report.html."""
    from betavae.pictures import report as run_report

    if os.path.isfile(run_dir):
        run_dir = os.path.dirname(run_dir) or "."
    print(f"wrote {run_report.refresh(run_dir, run_report.active_kl_of(run_dir))}")
    return 0


def udr(runs: list[str]) -> int:
    """UDR of the runs named (betavae/scale/udr_runs.py): one line per run, udr.yaml in each run folder."""
    from betavae.errors import DataError
    from betavae.scale.udr_runs import write_udr

    try:
        results = write_udr(runs)
    except (UserError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for run, record in results.items():
        print(f"{run}: udr_lasso {record['udr_lasso']:.3f} udr_spearman {record['udr_spearman']:.3f} "
              f"(against {', '.join(record['compared_with'])}; written to its udr.yaml)")
    return 0


def download(name: str) -> int:
    """Fetch a released disentangling-vae model (size, progress, SHA-256 checked, resumable) and say what to run."""
    from betavae.errors import DataError
    from betavae.released import download_released

    try:
        folder = download_released(name)
    except (UserError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"saved {folder}; draw and score it with: python traverse.py {folder} --metrics --report")
    return 0


def released_report(state: dict, folder: str) -> str:
    """A released model's report.html in the output folder: its pictures, scores and the settings it records."""
    import yaml

    from betavae.pictures import report as run_report

    with open(os.path.join(folder, "params.yaml"), "w", encoding="utf-8") as file:
        yaml.safe_dump({"command": "python " + " ".join(sys.argv), "source": state["source"],
                        "params": state["params"]}, file, sort_keys=False)
    return run_report.write_report(folder)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.download:
        return download(args.download)
    if not args.checkpoint:
        print("error: give a checkpoint or run folder (or --download NAME); see --help.", file=sys.stderr)
        return 2
    if args.udr:
        return udr(args.checkpoint)
    if len(args.checkpoint) > 1:
        print(f"error: {len(args.checkpoint)} runs given; give one run, or add --udr to compare several.",
              file=sys.stderr)
        return 2
    args.checkpoint = args.checkpoint[0]
    if args.select:
        from betavae.evaluation.scores import select

        try:
            select(args.select)
        except UserError as error:
            print(f"error: --select: {error}", file=sys.stderr)
            return 2
    where = args.checkpoint if os.path.isdir(args.checkpoint) else os.path.dirname(args.checkpoint) or "."
    if args.report and os.path.isfile(os.path.join(where, "log.csv")):  # a run of main.py: no model is loaded
        return report(args.checkpoint)
    args.gif = args.gif or args.assets  # the README shows the animated grid too
    from betavae.errors import DataError

    try:
        state, params, model, dataset, x, x_shown, dims, run_dir, folder = load(args)
    except (UserError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.aam_convergence:
        from betavae.evaluation import convergence
        from betavae.evaluation.context import Skip

        try:
            convergence.table(model, dataset, params.seed)
        except Skip as reason:
            print(f"error: {reason}", file=sys.stderr)
            return 2
        return 0
    draw(args, state, params, model, dataset, x, x_shown, dims, run_dir, folder)
    print(f"wrote the pictures of step {state['step']} to {folder}")
    if args.metrics:
        from betavae.evaluation import metrics

        own = params.metrics if params.metrics not in (False, "none") else "default"  # --metrics asks for scores
        metrics.record(model, dataset, folder, state["step"], params.seed, include_dci=not args.no_dci,
                       metrics=args.select or own, representation=params.metrics_representation,
                       aam_estimator=args.aam_estimator or params.aam_estimator)
    if args.report:  # a model with no training log here (a released one): its report beside its pictures
        print(f"wrote {released_report(state, folder)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
