"""What each latent took on CelebA: the correlation of μ with the 40 attribute labels, as a picture and a table."""
from __future__ import annotations

import os

import numpy as np
import torch

from betavae.pictures.plots import subplots

ACTIVE_VARIANCE = 0.01  # Burda et al. 2016: a latent is active when Var_x(E_q[z|x]) exceeds 0.01


@torch.no_grad()
def attribute_correlations(model, dataset, count: int, batch_size: int = 250
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of every posterior mean with the 40 attributes over `count` images (0: all).

    Returns (correlation [D, 40], variance of μ over the images [D]); a constant column correlates 0.
    """
    count = len(dataset) if count == 0 else min(count, len(dataset))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    means = []
    for start in range(0, count, batch_size):
        x, _ = dataset.batch(torch.arange(start, min(start + batch_size, count)))
        means.append(model.encoder(x.to(device))[0].double().cpu())  # [b, D]
    model.train(was_training)
    mu = torch.cat(means)                                            # [N, D]
    attributes = dataset.attributes[:count].double()                 # [N, 40]
    mu_centred, attributes_centred = mu - mu.mean(0), attributes - attributes.mean(0)
    covariance = mu_centred.T @ attributes_centred / count           # [D, 40]
    scale = torch.outer(mu_centred.pow(2).mean(0).sqrt(), attributes_centred.pow(2).mean(0).sqrt())
    correlation = torch.where(scale > 0, covariance / scale.clamp_min(1e-300), torch.zeros_like(scale))
    return correlation.numpy(), mu.var(0).numpy()


def save_attribute_correlations(model, dataset, run_dir: str, count: int = 5000) -> str | None:
    """attribute_correlation.png (active latents × 40 attributes) and .csv, from held-out images; None without attributes."""

    if getattr(dataset, "attributes", None) is None:
        return None
    split = dataset.held_out() or dataset

    correlation, variance = attribute_correlations(model, split, count)
    active = [int(d) for d in np.argsort(-variance) if variance[d] > ACTIVE_VARIANCE]
    rows = active or list(range(len(variance)))  # nothing active: show every latent rather than an empty plot
    names = split.attribute_names
    with open(os.path.join(run_dir, "attribute_correlation.csv"), "w") as file:
        file.write(",".join(["latent", "variance_of_mu", *names]) + "\n")
        for d in range(len(variance)):
            file.write(",".join([f"z{d}", f"{variance[d]:.6g}", *(f"{c:.4f}" for c in correlation[d])]) + "\n")
    figure, axis = subplots(figsize=(12, 1.2 + 0.28 * len(rows)), dpi=110)
    image = axis.imshow(correlation[rows], cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    axis.set_xticks(range(len(names)), [n.replace("_", " ") for n in names], rotation=90, fontsize=7)
    axis.set_yticks(range(len(rows)), [f"z{d}" for d in rows], fontsize=7)
    shown = "active latents (Var μ > 0.01), most variable first" if active else "no active latent: all shown"
    used = len(split) if count == 0 else min(count, len(split))
    axis.set_title(f"correlation of μ with the CelebA attributes over {used} {split.split} images; {shown}", fontsize=9)
    figure.colorbar(image, fraction=0.02, pad=0.01)
    figure.tight_layout()
    path = os.path.join(run_dir, "attribute_correlation.png")
    figure.savefig(path)
    return path
