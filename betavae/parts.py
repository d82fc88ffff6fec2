"""The parts of a run, built in this one place: the network (betavae/network.py) initialised under params.seed, its
Adam, and the objective that losses.OBJECTIVES registers for params.objective. The single run, the pack of a sweep,
the pack-size measurement and the benchmarks all build them here."""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from betavae.network import VAE
from losses import make_objective


def network(params, channels: int, device) -> VAE:
    """A fresh VAE for params, initialised right after manual_seed(params.seed), so equal seeds give equal weights."""
    torch.manual_seed(params.seed)
    return VAE(channels, params.latent_dim).to(device)


def optimizer(params, parameters: Iterable[torch.Tensor], **options) -> torch.optim.Adam:
    """Adam at params.lr and (adam_beta1, adam_beta2); `options` are the speed switches' (the fused kernel)."""
    return torch.optim.Adam(parameters, lr=params.lr, betas=(params.adam_beta1, params.adam_beta2), **options)


def objective(params, dataset_size: int, device):
    """The objective params.objective names, as its registry entry builds it (losses.Objective)."""
    return make_objective(params, dataset_size, device)


def build(params, channels: int, dataset_size: int, device, prepare: Callable[[VAE], dict] | None = None):
    """(model, optimiser, objective). `prepare(model)` runs before Adam sees the parameters (the speed switches swap
    layers and memory formats there) and returns Adam's extra keyword arguments."""
    model = network(params, channels, device)
    options = prepare(model) if prepare is not None else {}
    return model, optimizer(params, model.parameters(), **options), objective(params, dataset_size, device)
