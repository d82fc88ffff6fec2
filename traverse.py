"""Pictures of what a VAE learned: reconstructions, samples, latent traversals and GIFs, from a run or any checkpoint.

    python traverse.py predictions/<run>[/checkpoint.pt] [--out DIR] [--dims 0,3,7] [--from prior|posterior]
        [--range sigma:3|quantile:0.05|observed] [--gif] [--images N] [--indices 5,17] [--hide-inactive] [--assets]
"""
from __future__ import annotations

import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.utils import make_grid, save_image  # noqa: E402

import factors  # noqa: E402
from losses import kl_normal  # noqa: E402


@torch.no_grad()
def encode(model, x: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and log-variances of many images, in large batches: ([N, D], [N, D])."""
    parts = [model.encoder(chunk) for chunk in x.split(batch_size)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


@torch.no_grad()
def decode(model, z: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(model.decoder(z))  # [N, C, 64, 64] in [0, 1]


@torch.no_grad()
def save_reconstructions(model, x: torch.Tensor, path: str) -> None:
    """Inputs in the top row, their reconstructions (from the posterior mean) below."""
    mu, _ = encode(model, x)
    save_image(torch.cat([x, decode(model, mu)]).float().cpu(), path, nrow=len(x), pad_value=0.5)


@torch.no_grad()
def save_samples(model, latent_dim: int, path: str, count: int = 64, seed: int = 0) -> None:
    """Decoded draws z ~ N(0, I); the same draws at every step, so a run's sample grids show one set of z evolving."""
    z = torch.randn(count, latent_dim, generator=torch.Generator().manual_seed(seed))
    device = next(model.parameters()).device
    save_image(decode(model, z.to(device)).float().cpu(), path, nrow=int(count ** 0.5), pad_value=0.5)


def highest_mean_latent(mu: torch.Tensor) -> int:
    """The original project's choice: the element whose mean over samples is furthest from zero."""
    return int(mu.mean(dim=0).abs().argmax())


@torch.no_grad()
def save_highest_mean_traversal(model, x: torch.Tensor, path: str, points: int = 10) -> int:
    """Vary the highest-|mean| element from its observed min to max of μ, every other element at zero.

    The original project's method: μ over `x` (1000 samples by default), z = 0 except that element.
    Returns the latent index.
    """
    mu, _ = encode(model, x)
    dim = highest_mean_latent(mu)
    z = torch.zeros(points, mu.shape[1], device=mu.device)
    z[:, dim] = torch.linspace(mu[:, dim].min().item(), mu[:, dim].max().item(), points, device=mu.device)
    save_image(decode(model, z).float().cpu(), path, nrow=points, pad_value=0.5)
    return dim


def parse_range(text: str) -> tuple[str, float]:
    """'sigma:3' | 'quantile:0.05' | 'observed' → (kind, number); a UserError saying the accepted forms otherwise."""
    from params import UserError

    kind, _, number = text.partition(":")
    try:
        value = float(number) if number else {"sigma": 3.0, "quantile": 0.05, "observed": 0.0}[kind]
        if kind not in ("sigma", "quantile", "observed") or (kind == "sigma" and value <= 0) or \
                (kind == "quantile" and not 0 < value < 0.5):
            raise ValueError
    except (KeyError, ValueError):
        raise UserError(f"--range '{text}' is not understood; use sigma:K (K > 0), quantile:Q (0 < Q < 0.5) "
                        f"or observed.") from None
    return kind, value


def traversal_values(kind: str, value: float, points: int, mean: torch.Tensor, std: torch.Tensor,
                     observed_mu: torch.Tensor) -> torch.Tensor:
    """The values each latent takes along its traversal: [D, points].

    sigma:k      mean ± k·std
    quantile:q   mean + std·Φ⁻¹(q) … mean + std·Φ⁻¹(1 − q)
    observed     min … max of μ over the encoded images (the original project's range)
    (mean, std) is (0, 1) from the prior and the image's (μ, σ) from a posterior, as disentangling-vae's
    Visualizer does (Dubois et al., utils/visualize.py).
    """
    steps = torch.linspace(0, 1, points, device=mean.device)  # [points]
    if kind == "observed":
        low, high = observed_mu.min(dim=0).values, observed_mu.max(dim=0).values  # [D] each
    else:
        k = value if kind == "sigma" else -torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(value)).item()
        low, high = mean - k * std, mean + k * std
    return low[:, None] + (high - low)[:, None] * steps[None, :]


@torch.no_grad()
def traverse_rows(model, origin: torch.Tensor, values: torch.Tensor, dims: list[int]) -> torch.Tensor:
    """Decode origin with one latent at a time replaced by its traversal values: [len(dims), points, C, H, W]."""
    points = values.shape[1]
    z = origin.expand(len(dims), points, origin.shape[0]).clone()  # [R, points, D]
    for row, dim in enumerate(dims):
        z[row, :, dim] = values[dim]
    images = decode(model, z.flatten(0, 1))                         # [R·points, C, H, W]
    return images.view(len(dims), points, *images.shape[1:]).float().cpu()


def latent_order(kl: torch.Tensor, active_kl: float, hide_inactive: bool = False) -> list[int]:
    """Latent indices by KL to the prior, largest first; those below `active_kl` nats dropped when hiding."""
    order = kl.argsort(descending=True).tolist()
    return [d for d in order if kl[d] >= active_kl] if hide_inactive else order


def save_grid_figure(rows: torch.Tensor, labels: list[str], greyed: list[bool], title: str, path: str) -> None:
    """A labelled grid: one row per traversal, its label (latent, KL, range) on the left; greyed labels are inactive."""
    count, points, _, height, _ = rows.shape
    grid = make_grid(rows.flatten(0, 1), nrow=points, pad_value=0.5, padding=2)  # [3, H', W']
    size = height + 2
    figure, axis = plt.subplots(figsize=(points * 0.8 + 2.0, count * 0.8 + 0.6), dpi=100)
    axis.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    axis.set_yticks([2 + size * i + size / 2 for i in range(count)])
    axis.set_yticklabels(labels, fontsize=8)
    for tick, grey in zip(axis.get_yticklabels(), greyed):
        tick.set_color("0.6" if grey else "black")
    axis.set_xticks([])
    axis.set_title(title, fontsize=9)
    figure.savefig(path, bbox_inches="tight")  # room for the row labels whatever their length
    plt.close(figure)


def save_gif(rows: torch.Tensor, path: str, frame_ms: int = 120) -> int:
    """An animated GIF of a traversal: frame p shows every row at point p, side by side, forth and back.

    Returns the frame count, 2·points − 2 (Pillow merges identical consecutive frames, so a latent
    that changes nothing can make the file shorter).
    """
    points = rows.shape[1]
    sequence = list(range(points)) + list(range(points - 2, 0, -1))
    frames = []
    for p in sequence:
        strip = make_grid(rows[:, p], nrow=rows.shape[0], pad_value=0.5, padding=2)  # [3, H, W]
        pixels = (strip.permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
        frames.append(Image.fromarray(pixels).resize((pixels.shape[1] * 2, pixels.shape[0] * 2), Image.NEAREST))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    return len(frames)


@torch.no_grad()
def save_latent_grid(model, x: torch.Tensor, path: str, points: int = 10, radius: float = 3.0, *,
                     range_spec: str = "", origin: str = "prior", image: int = 0, dims: list[int] | None = None,
                     active_kl: float = 0.01, hide_inactive: bool = False, gif_path: str = "") -> list[int]:
    """Traverse latents from z = 0 (prior) or from image `image`'s posterior; rows sorted by KL to the prior, labelled.

    KL per dimension is averaged over `x`. `dims` picks rows (in that order); inactive latents (KL below
    `active_kl` nats) are greyed, or dropped with `hide_inactive`. Returns the row order.
    """
    mu, logvar = encode(model, x)
    kl = kl_normal(mu, logvar).cpu()
    order = list(dims) if dims else latent_order(kl, active_kl, hide_inactive)
    kind, value = parse_range(range_spec) if range_spec else ("sigma", radius)
    if origin == "posterior":
        mean, std = mu[image], torch.exp(0.5 * logvar[image])
    else:
        mean, std = torch.zeros_like(mu[0]), torch.ones_like(mu[0])
    values = traversal_values(kind, value, points, mean, std, mu)
    rows = traverse_rows(model, mean, values, order)
    labels = [f"z{d}  KL {kl[d]:.2f}  [{values[d, 0]:+.1f}, {values[d, -1]:+.1f}]" for d in order]
    where = "z = 0 (prior)" if origin == "prior" else f"the posterior mean of image {image}"
    spread = {"sigma": f"±{value:g}σ", "quantile": f"quantiles {value:g}…{1 - value:g}", "observed": "observed μ range"}
    save_grid_figure(rows, labels, [bool(kl[d] < active_kl) for d in order],
                     f"traversals from {where} over {spread[kind]}; rows by KL (nats), grey: inactive", path)
    if gif_path:
        save_gif(rows, gif_path)
    return order


def save_all(model, x: torch.Tensor, folder: str, tag: str = "", points: int = 10, n_reconstructions: int = 8,
             dataset=None, params=None) -> int:
    """Every picture for one moment of a run; file names carry `tag` (e.g. '_step005000').

    With a `dataset` that has ground-truth factors and `params.factor_samples` > 0, also the heat maps and
    μ-against-factor plot (factors.py). Returns the highest-|mean| latent.
    """
    os.makedirs(folder, exist_ok=True)
    active_kl = params.active_kl if params is not None else 0.01
    was_training = model.training
    model.eval()
    save_reconstructions(model, x[:n_reconstructions], os.path.join(folder, f"reconstructions{tag}.png"))
    save_samples(model, encode(model, x[:1])[0].shape[1], os.path.join(folder, f"samples{tag}.png"))
    dim = save_highest_mean_traversal(model, x, os.path.join(folder, f"traversal_highest_mean{tag}.png"), points)
    save_latent_grid(model, x, os.path.join(folder, f"traversal_grid{tag}.png"), points, active_kl=active_kl)
    if dataset is not None and params is not None and params.factor_samples > 0:
        mu, logvar = encode(model, x)
        factors.save_factor_pictures(lambda images: encode(model, images)[0], dataset, folder, tag,
                                     kl_normal(mu, logvar).cpu(), active_kl, params.factor_samples, params.seed)
    model.train(was_training)
    return dim


def parse_indices(text: str, limit: int, what: str) -> list[int]:
    """'0,3,7' → [0, 3, 7], each in [0, limit); a UserError naming the valid range otherwise."""
    from params import UserError

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
    parser.add_argument("checkpoint", help="path to a checkpoint.pt, or the run folder that holds one")
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
                        help="also recompute every disentanglement score into OUT/metrics.yaml (DCI included, "
                             "whatever the run's metrics_dci said)")
    parser.add_argument("--no-dci", action="store_true", help="with --metrics, leave out DCI (minutes on a CPU)")
    return parser.parse_args(argv)


def make_output_folder(folder: str) -> None:
    """Create `folder` (and its parents) for writing, or raise one UserError saying why it cannot be."""
    from params import UserError

    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"--out '{folder}' is an existing file; give a folder (new or existing) instead.")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise UserError(f"Cannot create the output folder '{folder}' ({error.strerror or error}); "
                        f"choose a writable place with --out.") from None
    if not os.access(folder, os.W_OK):
        raise UserError(f"The output folder '{folder}' is not writable; choose another with --out.")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.gif = args.gif or args.assets  # the README shows the animated grid too

    import plots
    from data import DataError, make_dataset
    from models import load_checkpoint, model_from_checkpoint
    from params import Params, UserError, apply_overrides

    try:
        parse_range(args.range_spec)
        if args.images <= 0:
            raise UserError(f"--images must be positive, got {args.images}.")
        if os.path.isdir(args.checkpoint):  # a run folder, as main.py --resume takes
            args.checkpoint = os.path.join(args.checkpoint, "checkpoint.pt")
        state = load_checkpoint(args.checkpoint)
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
        log_path = os.path.join(run_dir, "log.csv")
        if args.assets and not os.path.isfile(log_path):
            raise UserError(f"--assets also plots the run's log, but there is no {log_path}; pass a checkpoint "
                            f"inside its run folder.")
        folder = args.out or ("assets" if args.assets else os.path.join(run_dir, "traversals"))
        make_output_folder(folder)
    except (UserError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

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
        plots.plot_kl_per_dim(plots.read_log(log_path), os.path.join(folder, "kl_per_dim.png"))
    print(f"wrote the pictures of step {state['step']} to {folder}")
    if args.metrics:
        import metrics

        metrics.record(model, dataset, folder, state["step"], params.seed, include_dci=not args.no_dci)
    return 0


if __name__ == "__main__":
    sys.exit(main())
