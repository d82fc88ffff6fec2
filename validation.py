"""Validation loss: the training objective on a dataset's held-out split, logged to val.csv and drawn beside the training loss."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from plots import read_log  # noqa: E402


def held_out(dataset):
    """The dataset's held-out split, or None for datasets without one (dSprites is used whole)."""
    return dataset.held_out() if hasattr(dataset, "held_out") else None


@torch.no_grad()
def validation_loss(model, objective, dataset, step: int, params, batch_size: int = 250) -> dict[str, float] | None:
    """The objective's scalar terms averaged over the first `params.val_images` held-out images, as a val.csv row.

    The reparameterisation noise comes from a generator seeded afresh each time, so the curve moves only with
    the weights, and the training stream's random state is left exactly as it was (resume stays exact).
    """
    split = held_out(dataset)
    if split is None:
        return None
    count = len(split) if params.val_images == 0 else min(params.val_images, len(split))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(params.seed)
        for start in range(0, count, batch_size):
            indices = torch.arange(start, min(start + batch_size, count))
            x, _ = split.batch(indices)                    # [b, C, 64, 64]
            x_logits, mu, logvar, z = model(x)
            terms = objective(x, x_logits, mu, logvar, z, step, params)
            for name, value in terms.items():
                if value.dim() == 0 and name != "beta":    # per-image means: weight by the batch's size
                    totals[name] = totals.get(name, 0.0) + value.item() * len(indices)
    model.train(was_training)
    return {"step": step, **{f"val_{name}": round(total / count, 6) for name, total in totals.items()}}


def log_validation(model, objective, dataset, step: int, params, log) -> None:
    """Append the validation row for `step` to `log` (a main.CsvLog on val.csv) when the dataset has a held-out split."""
    row = validation_loss(model, objective, dataset, step, params)
    if row is not None:
        log.write(row)


def plot_validation(run_dir: str) -> str | None:
    """validation.png: each training loss term (log.csv) with its held-out counterpart (val.csv); None without val.csv."""
    val_path, train_path = os.path.join(run_dir, "val.csv"), os.path.join(run_dir, "log.csv")
    if not (os.path.exists(val_path) and os.path.exists(train_path)):
        return None
    held, train = read_log(val_path), read_log(train_path)
    if not held.get("step"):
        return None
    figure, axis = plt.subplots(figsize=(7, 4), dpi=110)
    for index, name in enumerate(k[4:] for k in held if k.startswith("val_")):
        colour = f"C{index}"
        if name in train:
            axis.plot(train["step"], train[name], color=colour, alpha=0.6, label=f"{name} (training batches)")
        axis.plot(held["step"], held[f"val_{name}"], color=colour, marker="o", linestyle="--",
                  label=f"{name} (held out)")
    axis.set_xlabel("step"), axis.set_ylabel("nats per image"), axis.set_yscale("symlog")
    axis.legend(fontsize=8)
    figure.tight_layout()
    path = os.path.join(run_dir, "validation.png")
    figure.savefig(path)
    plt.close(figure)
    return path
