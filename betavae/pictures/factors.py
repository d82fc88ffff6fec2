"""Which latent took which ground-truth factor: heat maps of mean μ over position and μ against each other factor.

For datasets with ground-truth factors (`factor_names`, `factor_sizes`, `latents_classes`, `images`) on a complete
grid, i.e. dSprites, its variants and an npz with every combination; the others (CelebA) get none of these
pictures. The heat maps are the right column of Fig. 2 of Dubois et al. 2019 (poster, docs/references.md).
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
import torch

from betavae.pictures.plots import subplots

POSITION = ("posX", "posY")
# Draws of the other factors per factor value behind factor_means*.png: the standard error of each plotted mean is
# its band's half-width / sqrt(64) = 1/8 of it, so the lines are not sampling noise (4 draws gave 1/2). 3,136
# images on dSprites: 1.7-2.5 s on one shared CPU thread for a 10-latent VAE (3.4 s with 128 draws).
FACTOR_DRAWS = 64


def has_factors(dataset) -> bool:
    """Factors named posX and posY on a complete grid (`complete_grid`), where every combination has an image."""
    return bool(getattr(dataset, "factor_sizes", None)) and all(n in dataset.factor_names for n in POSITION) \
        and getattr(dataset, "complete_grid", True)


def _random_classes(dataset, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` rows of latents_classes drawn uniformly, so every factor not set afterwards is averaged over."""
    rows = torch.randint(len(dataset.latents_classes), (count,), generator=generator)
    return dataset.latents_classes[rows.to(dataset.latents_classes.device)].clone()  # [count, 1 + factors]


@torch.no_grad()
def _mean_mu(encoder: Callable, dataset, classes: torch.Tensor, groups: int, batch_size: int = 1024) -> torch.Tensor:
    """Mean μ per group for classes laid out group-major ([groups · k, ...]): [groups, D]."""
    mu = torch.cat([encoder(dataset.images(chunk)).cpu() for chunk in classes.split(batch_size)])  # [groups·k, D]
    return mu.view(groups, -1, mu.shape[1]).mean(dim=1)


@torch.no_grad()
def _mu_statistics(encoder: Callable, dataset, classes: torch.Tensor, groups: int,
                   batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (over the draws of a group) of μ per group, laid out as in `_mean_mu`: two [groups, D]."""
    mu = torch.cat([encoder(dataset.images(chunk)).cpu() for chunk in classes.split(batch_size)])
    mu = mu.view(groups, -1, mu.shape[1])
    return mu.mean(dim=1), (mu.std(dim=1) if mu.shape[1] > 1 else torch.zeros_like(mu[:, 0]))


def position_heatmaps(encoder: Callable, dataset, samples: int, seed: int = 0) -> torch.Tensor:
    """Mean μ of every latent at each (posX, posY) cell, over `samples` random draws of the other factors per cell.

    Returns [D, size_y, size_x]: maps[d, y, x] is latent d's mean μ with the sprite at column x, row y (image layout).
    """
    x_column, y_column = (1 + dataset.factor_names.index(n) for n in POSITION)  # column 0 of latents_classes is colour
    size_x, size_y = (dataset.factor_sizes[dataset.factor_names.index(n)] for n in POSITION)
    classes = _random_classes(dataset, size_y * size_x * samples, torch.Generator().manual_seed(seed))
    cells = torch.arange(size_y * size_x, device=classes.device).repeat_interleave(samples)  # group-major
    classes[:, y_column], classes[:, x_column] = cells // size_x, cells % size_x
    means = _mean_mu(encoder, dataset, classes, size_y * size_x)  # [cells, D]
    return means.T.reshape(-1, size_y, size_x)


def factor_statistics(encoder: Callable, dataset, draws: int = FACTOR_DRAWS,
                      seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """For every factor except position: mean and std of μ at each of its values over `draws` random draws of the
    other factors: {name: (mean [size, D], std [size, D])}; the standard error of a mean is std / sqrt(draws)."""
    generator = torch.Generator().manual_seed(seed + 1)
    out = {}
    for index, (name, size) in enumerate(zip(dataset.factor_names, dataset.factor_sizes)):
        if name in POSITION:
            continue
        classes = _random_classes(dataset, size * draws, generator)
        classes[:, 1 + index] = torch.arange(size, device=classes.device).repeat_interleave(draws)
        out[name] = _mu_statistics(encoder, dataset, classes, size)
    return out


def factor_means(encoder: Callable, dataset, samples: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """For every factor except position: mean μ at each of its values, over `samples` draws of the rest: {name: [size, D]}."""
    return {name: mean for name, (mean, _) in factor_statistics(encoder, dataset, samples, seed).items()}


def shown_latents(kl: torch.Tensor, active_kl: float) -> list[int]:
    """Active latents by KL, largest first; all of them by KL when none is active (an untrained model still gets a picture)."""
    order = kl.argsort(descending=True).tolist()
    return [d for d in order if kl[d] >= active_kl] or order


def save_heatmaps(maps: torch.Tensor, dims: list[int], kl: torch.Tensor, path: str) -> None:
    """One panel per latent: its mean μ over sprite positions, with its own colour scale."""
    columns = min(5, len(dims))
    lines = -(-len(dims) // columns)
    figure, axes = subplots(lines, columns, figsize=(2.2 * columns + 0.4, 2.3 * lines + 0.3), dpi=100,
                                squeeze=False)
    for axis in axes.flat[len(dims):]:
        axis.set_axis_off()
    for axis, d in zip(axes.flat, dims):
        image = axis.imshow(maps[d].numpy(), cmap="viridis", interpolation="nearest")
        axis.set_title(f"z{d}  KL {kl[d]:.2f}", fontsize=8)
        axis.set_xlabel("posX", fontsize=7), axis.set_ylabel("posY", fontsize=7)
        axis.set_xticks([]), axis.set_yticks([])
        figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
    figure.suptitle("mean μ over (posX, posY), other factors averaged", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)


def save_factor_plot(means: dict[str, torch.Tensor], dims: list[int], kl: torch.Tensor, path: str,
                     spreads: dict[str, torch.Tensor] | None = None, draws: int | None = None,
                     categories: dict[str, list[str]] | None = None) -> None:
    """One panel per factor: mean μ of each shown latent against the factor's class index, with ±1 std of μ over the
    draws of the other factors when `spreads` ({name: [size, D]}) is given: a shaded band for an ordered factor, error
    bars on unjoined points for a categorical one (`categories`: {name: class names}, e.g. dSprites' shapes)."""
    from matplotlib.ticker import MaxNLocator

    categories = categories or {}
    figure, axes = subplots(1, len(means), figsize=(3.4 * len(means), 3.0), dpi=100, squeeze=False)
    for axis, (name, values) in zip(axes[0], means.items()):
        positions = np.arange(len(values))
        for offset, d in enumerate(dims):
            spread = spreads[name][:, d].numpy() if spreads is not None else None
            if name in categories:  # categories have no order: points side by side, never joined
                shift = (offset - (len(dims) - 1) / 2) * min(0.6 / max(len(dims), 1), 0.15)
                axis.errorbar(positions + shift, values[:, d].numpy(), yerr=spread, fmt="o", markersize=3,
                              capsize=2, label=f"z{d} ({kl[d]:.2f})")
                continue
            line, = axis.plot(positions, values[:, d].numpy(), marker="o" if len(values) < 10 else None,
                              markersize=3, label=f"z{d} ({kl[d]:.2f})")
            if spread is not None:
                low, high = values[:, d].numpy() - spread, values[:, d].numpy() + spread
                axis.fill_between(positions, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
        if name in categories:
            axis.set_xticks(positions, categories[name], fontsize=7)
            axis.set_xlabel(name, fontsize=8)
        else:
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            axis.set_xlabel(f"{name} (class index)", fontsize=8)
        axis.set_ylabel("mean μ", fontsize=8)
        axis.tick_params(labelsize=7)
    axes[0][-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5), title="latent (KL)", title_fontsize=6)
    if spreads is not None:
        figure.suptitle(f"mean μ over {draws} draws of the other factors per value; ±1 std of μ", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)


def save_factor_pictures(encoder: Callable, dataset, folder: str, tag: str, kl: torch.Tensor, active_kl: float,
                         samples: int, seed: int = 0, draws: int = FACTOR_DRAWS) -> list[str]:
    """heatmaps{tag}.png (`samples` draws per cell) and factor_means{tag}.png (`draws` per factor value, with a
    ±1 std band) for the active latents; nothing for a dataset without factors."""
    if not has_factors(dataset):
        return []
    dims = shown_latents(kl, active_kl)
    paths = [os.path.join(folder, f"heatmaps{tag}.png"), os.path.join(folder, f"factor_means{tag}.png")]
    save_heatmaps(position_heatmaps(encoder, dataset, samples, seed), dims, kl, paths[0])
    statistics = factor_statistics(encoder, dataset, draws, seed)
    save_factor_plot({n: m for n, (m, _) in statistics.items()}, dims, kl, paths[1],
                     {n: s for n, (_, s) in statistics.items()}, draws, getattr(dataset, "factor_categories", None))
    return paths
