"""Pictures of what a VAE learned: reconstructions, samples, latent traversals (the highest-|mean| latent's among
them) and their GIFs, and every picture of one moment of a run (`save_all`)."""
from __future__ import annotations

import os

import torch
from PIL import Image
from torchvision.utils import make_grid, save_image

from betavae.pictures import factors
from betavae.pictures.plots import subplots
from losses import kl_normal


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
    active = [d for d in order if kl[d] >= active_kl]
    return active if hide_inactive and active else order  # none active: all, greyed, rather than an empty grid


def save_grid_figure(rows: torch.Tensor, labels: list[str], greyed: list[bool], title: str, path: str) -> None:
    """A labelled grid: one row per traversal, its label (latent, KL, range) on the left; greyed labels are inactive."""
    count, points, _, height, _ = rows.shape
    grid = make_grid(rows.flatten(0, 1), nrow=points, pad_value=0.5, padding=2)  # [3, H', W']
    size = height + 2
    figure, axis = subplots(figsize=(points * 0.8 + 2.0, count * 0.8 + 0.6), dpi=100)
    axis.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    axis.set_yticks([2 + size * i + size / 2 for i in range(count)])
    axis.set_yticklabels(labels, fontsize=8)
    for tick, grey in zip(axis.get_yticklabels(), greyed):
        tick.set_color("0.6" if grey else "black")
    axis.set_xticks([])
    axis.set_title(title, fontsize=9)
    figure.savefig(path, bbox_inches="tight")  # room for the row labels whatever their length


def save_gif(rows: torch.Tensor, path: str, frame_ms: int = 120, labels: list[str] | None = None) -> int:
    """An animated GIF of a traversal: frame p shows every row at point p, side by side, forth and back, each panel
    under its label when `labels` are given.

    Returns the frame count, 2·points − 2 (Pillow merges identical consecutive frames, so a latent
    that changes nothing can make the file shorter).
    """
    from PIL import ImageDraw

    points = rows.shape[1]
    sequence = list(range(points)) + list(range(points - 2, 0, -1))
    frames = []
    for p in sequence:
        strip = make_grid(rows[:, p], nrow=rows.shape[0], pad_value=0.5, padding=2)  # [3, H, W]
        pixels = (strip.permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
        frame = Image.fromarray(pixels).resize((pixels.shape[1] * 2, pixels.shape[0] * 2), Image.NEAREST)
        if labels:
            panel = frame.width / len(labels)
            labelled = Image.new("RGB", (frame.width, frame.height + 16), (255, 255, 255))
            labelled.paste(frame, (0, 16))
            draw = ImageDraw.Draw(labelled)
            for k, label in enumerate(labels):
                width = draw.textlength(label)
                draw.text((k * panel + (panel - width) / 2, 2), label, fill=(0, 0, 0))
            frame = labelled
        frames.append(frame)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    return len(frames)


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
    if gif_path:  # the animation shows the active latents only (all when none is), each labelled
        moving = [k for k, d in enumerate(order) if kl[d] >= active_kl] or list(range(len(order)))
        save_gif(rows[moving], gif_path, labels=[f"z{order[k]}" for k in moving])
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
