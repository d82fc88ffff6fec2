"""Pictures of what a VAE learned: reconstructions and latent traversals, from a run or any checkpoint.

    python traverse.py predictions/<run>/checkpoint.pt [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid, save_image  # noqa: E402

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


@torch.no_grad()
def save_latent_grid(model, x: torch.Tensor, path: str, points: int = 10, radius: float = 3.0) -> list[int]:
    """Traverse every latent from z = 0 over ±radius (prior σ); rows sorted by KL to the prior, labelled.

    Returns the latent order (largest KL first).
    """
    mu, logvar = encode(model, x)
    kl = kl_normal(mu, logvar).cpu()
    order = kl.argsort(descending=True).tolist()
    values = torch.linspace(-radius, radius, points, device=mu.device)
    rows = []
    for dim in order:
        z = torch.zeros(points, mu.shape[1], device=mu.device)
        z[:, dim] = values
        rows.append(decode(model, z).float().cpu())
    grid = make_grid(torch.cat(rows), nrow=points, pad_value=0.5, padding=2)  # [C, H, W]
    size = x.shape[-1] + 2
    figure, axis = plt.subplots(figsize=(points * 0.8 + 1.4, len(order) * 0.8 + 0.6), dpi=100)
    axis.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    axis.set_yticks([2 + size * i + size / 2 for i in range(len(order))])
    axis.set_yticklabels([f"z{d}  KL {kl[d]:.2f}" for d in order], fontsize=8)
    axis.set_xticks([2 + size * i + size / 2 for i in range(points)])
    axis.set_xticklabels([f"{v:+.1f}" for v in values.tolist()], fontsize=7)
    axis.set_title(f"latent traversals from z = 0 over ±{radius:g}σ, rows sorted by KL (nats)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return order


def save_all(model, x: torch.Tensor, folder: str, tag: str = "", points: int = 10, n_reconstructions: int = 8) -> int:
    """Every picture for one moment of a run; file names carry `tag` (e.g. '_step005000')."""
    os.makedirs(folder, exist_ok=True)
    was_training = model.training
    model.eval()
    save_reconstructions(model, x[:n_reconstructions], os.path.join(folder, f"reconstructions{tag}.png"))
    dim = save_highest_mean_traversal(model, x, os.path.join(folder, f"traversal_highest_mean{tag}.png"), points)
    save_latent_grid(model, x, os.path.join(folder, f"traversal_grid{tag}.png"), points)
    model.train(was_training)
    return dim


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Redraw traversals from a checkpoint written by main.py.")
    parser.add_argument("checkpoint", help="path to a checkpoint.pt")
    parser.add_argument("--out", help="output folder (default: <checkpoint folder>/traversals)")
    parser.add_argument("--metrics", action="store_true", help="also recompute every disentanglement score into OUT/metrics.yaml")
    args = parser.parse_args(argv)

    from data import DataError, make_dataset
    from models import load_checkpoint, model_from_checkpoint
    from params import Params, UserError, apply_overrides

    try:
        state = load_checkpoint(args.checkpoint)
        params = apply_overrides(Params(), state["params"], f"checkpoint '{args.checkpoint}'")
        model = model_from_checkpoint(state).eval()
        dataset = make_dataset(params, "cpu")
        generator = torch.Generator().manual_seed(params.seed)
        indices = torch.randint(len(dataset), (params.traverse_samples,), generator=generator)
        x, _ = dataset.batch(indices)
    except (UserError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    folder = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "traversals")
    dim = save_all(model, x, folder, tag=f"_step{state['step']:06d}", points=params.traverse_points)
    print(f"wrote traversals of step {state['step']} to {folder} (highest-|mean| latent: z{dim})")
    if args.metrics:
        import metrics

        metrics.record(model, dataset, folder, state["step"], params.seed, params.metrics_dci)
    return 0


if __name__ == "__main__":
    sys.exit(main())
