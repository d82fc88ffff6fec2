"""Validation loss: the training objective on a dataset's held-out split, logged to val.csv (drawn by plots.py)."""
from __future__ import annotations

import torch


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
    """Append the validation row for `step` to `log` (a CsvLog on val.csv) when the dataset has a held-out split."""
    row = validation_loss(model, objective, dataset, step, params)
    if row is not None:
        log.write(row)
