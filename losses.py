"""Reconstruction likelihoods, the KL to the prior, weight schedules and the disentangling objectives built from them.

Reduction, stated once: every term is summed over pixels and latent dimensions and averaged over the batch,
so a loss is "nats per image". What an objective returns and declares: betavae/objectives.py, with the registry.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from betavae.objectives import REGISTRY


# --- schedules: one mechanism for every annealed weight (β, γ, capacity C) ---

# progress through a ramp in [0, 1] → fraction of the way from `start` to `end`.
RAMPS = {
    "linear": lambda progress: progress,
    "cosine": lambda progress: 0.5 * (1.0 - math.cos(math.pi * progress)),  # flat at both ends
}

# Weight name → the Params field holding the length of its schedule (β keeps the foundation's `anneal_steps`).
STEPS_FIELD = {"beta": "anneal_steps", "gamma": "gamma_steps", "capacity": "capacity_steps"}


def linear_schedule(step: int, start: float, end: float, steps: int) -> float:
    """`start` at step 0 moving linearly to `end` at `steps` (either direction), then held; constant if steps == 0."""
    return schedule_value("linear", step, start, end, steps)


def schedule_value(shape: str, step: int, start: float, end: float, steps: int, delay: int = 0,
                   cycles: int = 4, ratio: float = 0.5) -> float:
    """The weight at `step`: `start` until `delay`, then `shape` over the next `steps` steps, then `end` for good.

    constant: `end` throughout (start, delay and steps are ignored).
    linear / cosine: one ramp from `start` to `end` (up or down) over `steps`.
    cyclical: Fu et al. 2019 ("Cyclical annealing schedule", NAACL), its β_t: `steps` split into `cycles`
    equal periods; each ramps linearly from `start` to `end` over its first `ratio` fraction, then holds `end`.
    A pure function of the step, so a resumed run continues its schedule exactly.
    """
    if shape == "constant" or steps <= 0:
        return end
    elapsed = step - delay
    if elapsed <= 0:
        return start
    if elapsed >= steps:
        return end
    if shape == "cyclical":
        period = steps / cycles
        fraction = min((elapsed % period) / (period * ratio), 1.0)
    else:
        fraction = RAMPS[shape](elapsed / steps)
    return start + (end - start) * fraction


def weight_at(params, name: str, step: int) -> float:
    """The scheduled value of weight `name` (beta | gamma | capacity) from its Params fields.

    Reads `name` (the end value), `name_start` (None: constant at the end value), `name_schedule`, `name_delay`,
    its steps field (STEPS_FIELD) and the shared `schedule_cycles` and `schedule_ratio`.
    """
    end = getattr(params, name)
    start = getattr(params, f"{name}_start")
    return schedule_value(getattr(params, f"{name}_schedule"), step, end if start is None else start, end,
                          getattr(params, STEPS_FIELD[name]), getattr(params, f"{name}_delay"),
                          params.schedule_cycles, params.schedule_ratio)


# --- likelihoods and the KL ---

def reconstruction_nll(x: torch.Tensor, x_logits: torch.Tensor, kind: str, std: float = 0.7071) -> torch.Tensor:
    """−log p(x|z) per image, averaged over the batch, without constants.

    bernoulli: binary cross-entropy on logits (numerically stable; x in [0, 1]).
    gaussian:  fixed-variance N(sigmoid(logits), std²); std = 1/√2 gives the summed squared error.
    laplace:   fixed-scale Laplace(sigmoid(logits), b) with the same standard deviation, b = std/√2:
               Σ|x − x̂|/b; std = 1/√2 gives twice the summed absolute error.
    """
    if kind == "bernoulli":
        nll = F.binary_cross_entropy_with_logits(x_logits, x, reduction="sum")
    elif kind == "gaussian":
        nll = F.mse_loss(torch.sigmoid(x_logits), x, reduction="sum") / (2 * std ** 2)
    elif kind == "laplace":
        nll = F.l1_loss(torch.sigmoid(x_logits), x, reduction="sum") / (std / math.sqrt(2))
    else:
        raise ValueError(f"unknown reconstruction likelihood {kind!r}")
    return nll / x.shape[0]


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) per latent dimension, batch mean: [D]; Kingma & Welling 2014, appendix B."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean(dim=0)


def beta_at(step: int, params) -> float:
    return weight_at(params, "beta", step)


def _elbo_terms(x, x_logits, mu, logvar, params) -> dict[str, torch.Tensor]:
    """The two ELBO terms every objective starts from."""
    recon = reconstruction_nll(x, x_logits, params.recon, params.recon_std)
    kl_per_dim = kl_normal(mu, logvar)
    return {"recon": recon, "kl": kl_per_dim.sum(), "kl_per_dim": kl_per_dim}


def beta_vae(x, x_logits, mu, logvar, z, step: int, params) -> dict[str, torch.Tensor]:
    """Higgins et al. 2017, Eq. (4): −E_q[log p(x|z)] + β·KL(q(z|x) ‖ p(z)), β scheduled.

    With params.beta_normalised the scheduled value is Higgins's β_norm = β·latent_dim/pixels (Sec. 4), and
    β = β_norm·pixels/latent_dim; both are logged either way.
    """
    terms = _elbo_terms(x, x_logits, mu, logvar, params)
    ratio = mu.shape[1] / x[0].numel()                    # latent_dim / pixels (channels included)
    scheduled = beta_at(step, params)
    beta = scheduled / ratio if params.beta_normalised else scheduled
    return {"loss": terms["recon"] + beta * terms["kl"], **terms, "beta": torch.tensor(beta),
            "beta_norm": torch.tensor(beta * ratio)}


def vae(x, x_logits, mu, logvar, z, step: int, params) -> dict[str, torch.Tensor]:
    """Kingma & Welling 2014: the negative ELBO, i.e. beta_vae with β = 1 whatever params.beta says."""
    terms = _elbo_terms(x, x_logits, mu, logvar, params)
    return {"loss": terms["recon"] + terms["kl"], **terms, "beta": torch.tensor(1.0)}


def capacity_vae(x, x_logits, mu, logvar, z, step: int, params) -> dict[str, torch.Tensor]:
    """Burgess et al. 2018, Sec. 5 (controlled capacity increase): −E_q[log p(x|z)] + γ·|KL(q(z|x) ‖ p(z)) − C|.

    C rises from `capacity_start` to `capacity` nats over `capacity_steps` (linear by default); γ is scheduled too.
    """
    terms = _elbo_terms(x, x_logits, mu, logvar, params)
    gamma, capacity = weight_at(params, "gamma", step), weight_at(params, "capacity", step)
    return {"loss": terms["recon"] + gamma * (terms["kl"] - capacity).abs(), **terms,
            "gamma": torch.tensor(gamma), "capacity": torch.tensor(capacity)}


def log_density_gaussian(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(z; μ, σ²), broadcasting."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) / logvar.exp())


def log_importance_weights(batch_size: int, dataset_size: int) -> torch.Tensor:
    """Minibatch-stratified sampling weights, log of [B, B], rows summing to 1 (Chen et al. 2018, appendix C.2).

    Row i weighs its own sample by 1/N, the next one (i + 1 mod B) by (N − M)/(N·M) and the rest by 1/M, with
    M = B − 1, as the paper derives. Chen et al.'s code (rtqichen/beta-tcvae) writes these two weights with flat
    strides of B, which lands them on columns 0 and 1 instead of the diagonal; both rows sum to 1.
    """
    n, m = dataset_size, batch_size - 1
    if n < m:
        raise ValueError(f"stratified sampling needs a dataset ({n}) at least as large as the batch less one ({m})")
    rows = torch.arange(batch_size)
    weights = torch.full((batch_size, batch_size), 1 / m)
    weights[rows, rows] = 1 / n
    weights[rows, (rows + 1) % batch_size] = (n - m) / (n * m)
    return weights.log()


def kl_decomposition(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int,
                     estimator: str) -> dict[str, torch.Tensor]:
    """Chen et al. 2018, Sec. 2: the sampled KL = index-code MI + total correlation + dimension-wise KL.

    q(z) and q(z_d) are estimated on the minibatch from the matrix log q(z_i|x_j) [B, B, D]:
    mss: minibatch-stratified sampling, the weights of log_importance_weights (dataset size N enters).
    mws: minibatch-weighted sampling, q(z_i) ≈ (1/M) Σ_j q(z_i|x_j). Chen et al.'s code divides by N·M instead;
         that shifts log q(z) by −log N and Σ_d log q(z_d) by −D·log N (mi +log N, tc +(D−1)·log N, dim_kl
         −D·log N): constants with the same gradients. Dividing by M keeps tc ≈ 0 for a factorised q.
    The three terms always sum to the sampled KL, mean(log q(z|x) − log p(z)), whatever the estimator.
    """
    batch_size = z.shape[0]
    log_qz_given_x = log_density_gaussian(z, mu, logvar).sum(1)                      # [B]
    log_pz = log_density_gaussian(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)  # [B]
    matrix = log_density_gaussian(z.unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0))  # [B, B, D]
    if estimator == "mss":
        log_weights = log_importance_weights(batch_size, dataset_size).to(z)          # [B, B]
        log_qz = torch.logsumexp(log_weights + matrix.sum(2), dim=1)                   # [B]
        log_prod_qzd = torch.logsumexp(log_weights.unsqueeze(2) + matrix, dim=1).sum(1)
    elif estimator == "mws":
        log_qz = torch.logsumexp(matrix.sum(2), dim=1) - math.log(batch_size)
        log_prod_qzd = (torch.logsumexp(matrix, dim=1) - math.log(batch_size)).sum(1)
    else:
        raise ValueError(f"unknown total-correlation estimator {estimator!r}")
    return {"mi": (log_qz_given_x - log_qz).mean(), "tc": (log_qz - log_prod_qzd).mean(),
            "dim_kl": (log_prod_qzd - log_pz).mean()}


def beta_tc_vae(x, x_logits, mu, logvar, z, step: int, params, dataset_size: int) -> dict[str, torch.Tensor]:
    """Chen et al. 2018, Sec. 4 (the poster's Eq. (1)): recon + α·MI + β·TC + γ·dim-wise KL; β and γ scheduled.

    The KL is replaced by its minibatch decomposition (kl_decomposition); `kl` logs the analytic KL beside it.
    """
    terms = _elbo_terms(x, x_logits, mu, logvar, params)
    parts = kl_decomposition(z, mu, logvar, dataset_size, params.tc_estimator)
    beta, gamma = weight_at(params, "beta", step), weight_at(params, "gamma", step)
    loss = terms["recon"] + params.alpha * parts["mi"] + beta * parts["tc"] + gamma * parts["dim_kl"]
    return {"loss": loss, **terms, **parts, "alpha": torch.tensor(params.alpha), "beta": torch.tensor(beta),
            "gamma": torch.tensor(gamma)}


def covariance(values: torch.Tensor) -> torch.Tensor:
    """Batch covariance E[v vᵀ] − E[v] E[v]ᵀ (divided by B, as disentanglement_lib does): [B, D] → [D, D]."""
    centred = values - values.mean(0, keepdim=True)
    return centred.T @ centred / values.shape[0]


def dip_regulariser(cov: torch.Tensor, lambda_od: float, lambda_d: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Kumar et al. 2018 (ICLR), Sec. 3: (λ_od·Σ_{i≠j} Cov_ij², λ_d·Σ_i (Cov_ii − 1)²), pushing Cov towards I."""
    diagonal = torch.diagonal(cov)
    off_diagonal = cov - torch.diag(diagonal)
    return lambda_od * off_diagonal.pow(2).sum(), lambda_d * (diagonal - 1).pow(2).sum()


def _dip_vae(cov: torch.Tensor, terms: dict, params) -> dict[str, torch.Tensor]:
    off_diagonal, diagonal = dip_regulariser(cov, params.lambda_od, params.lambda_d)
    return {"loss": terms["recon"] + terms["kl"] + off_diagonal + diagonal, **terms,
            "dip_off_diagonal": off_diagonal, "dip_diagonal": diagonal}


def dip_vae_i(x, x_logits, mu, logvar, z, step: int, params) -> dict[str, torch.Tensor]:
    """Kumar et al. 2018, Sec. 3, DIP-VAE-I: the ELBO + the DIP regulariser on Cov_p(x)[μ(x)]."""
    return _dip_vae(covariance(mu), _elbo_terms(x, x_logits, mu, logvar, params), params)


def dip_vae_ii(x, x_logits, mu, logvar, z, step: int, params) -> dict[str, torch.Tensor]:
    """Kumar et al. 2018, Sec. 3, DIP-VAE-II: the regulariser on Cov_q(z)[z] = E_p(x)[diag σ²(x)] + Cov[μ(x)]."""
    cov = torch.diag(logvar.exp().mean(0)) + covariance(mu)
    return _dip_vae(cov, _elbo_terms(x, x_logits, mu, logvar, params), params)


class Discriminator(nn.Module):
    """Kim & Mnih 2018, appendix: an MLP telling q(z) (class 0) from q̄(z) = Π_d q(z_d) (class 1).

    `layers` hidden layers of `width` units with LeakyReLU 0.2, then 2 logits (6 × 1000 in the paper).
    """

    def __init__(self, latent_dim: int, width: int = 1000, layers: int = 6):
        super().__init__()
        blocks, size = [], latent_dim
        for _ in range(layers):
            blocks += [nn.Linear(size, width), nn.LeakyReLU(0.2)]
            size = width
        self.net = nn.Sequential(*blocks, nn.Linear(size, 2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)                                 # [B, 2] logits


def permute_dims(z: torch.Tensor) -> torch.Tensor:
    """Kim & Mnih 2018, Algorithm 1: shuffle each latent dimension independently across the batch."""
    return torch.stack([column[torch.randperm(z.shape[0], device=z.device)] for column in z.T], dim=1)


def discriminator_tc(discriminator: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """TC(z) by the density-ratio trick, Kim & Mnih 2018, Sec. 3: E[log D(z)/(1 − D(z))] = E[logit₀ − logit₁]."""
    logits = discriminator(z)
    return (logits[:, 0] - logits[:, 1]).mean()


def discriminator_loss(discriminator: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of telling z (class 0) from permute_dims(z) (class 1), each half weighted ½ (Algorithm 2)."""
    z = z.detach()
    real = F.cross_entropy(discriminator(z), torch.zeros(len(z), dtype=torch.long, device=z.device))
    permuted = F.cross_entropy(discriminator(permute_dims(z)), torch.ones(len(z), dtype=torch.long, device=z.device))
    return 0.5 * (real + permuted)


def factor_vae(x, x_logits, mu, logvar, z, step: int, params, discriminator: nn.Module) -> dict[str, torch.Tensor]:
    """Kim & Mnih 2018, Eq. (2): −E_q[log p(x|z)] + KL(q(z|x) ‖ p(z)) + γ·TC(z), TC from the discriminator."""
    terms = _elbo_terms(x, x_logits, mu, logvar, params)
    tc, gamma = discriminator_tc(discriminator, z), weight_at(params, "gamma", step)
    return {"loss": terms["recon"] + terms["kl"] + gamma * tc, **terms, "tc": tc, "gamma": torch.tensor(gamma)}


class FactorObjective:
    """factor_vae with its discriminator and the discriminator's own Adam, as one stateful objective.

    The training step calls it like any objective, then calls `after_step()`, which updates the discriminator on
    the codes of the same batch (disentanglement_lib's FactorVAE updates both networks on one batch; Kim & Mnih's
    Algorithm 2 draws a second one). `state_dict` / `load_state_dict` go into and out of the checkpoint.
    """

    def __init__(self, params, device: torch.device):
        self.discriminator = Discriminator(params.latent_dim).to(device)
        self.lr, self.betas = params.discriminator_lr, (params.discriminator_beta1, params.discriminator_beta2)
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=self.betas)
        self.codes = None

    def __call__(self, x, x_logits, mu, logvar, z, step: int, params) -> dict[str, torch.Tensor]:
        self.codes = z.detach()
        self.discriminator.requires_grad_(False)          # the VAE's backward needs ∂TC/∂z, not the weights' grads
        return OBJECTIVES["factor"](x, x_logits, mu, logvar, z, step, params, discriminator=self.discriminator)

    def after_step(self) -> dict[str, torch.Tensor]:
        self.discriminator.requires_grad_(True)
        loss = discriminator_loss(self.discriminator, self.codes)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"discriminator_loss": loss.detach()}

    def state_dict(self) -> dict:
        return {"discriminator": self.discriminator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:      # a resume trains with the params' values, not the saved ones
            group["lr"], group["betas"] = self.lr, self.betas


def build_btcvae(params, dataset_size: int, device):
    return functools.partial(beta_tc_vae, dataset_size=dataset_size)  # its estimator weighs the batch by N


def build_factor(params, dataset_size: int, device):
    return FactorObjective(params, device)


# name → loss function, from the registry of objectives (betavae/objectives.py: the contract, and where to add one).
OBJECTIVES = {name: globals()[entry.loss] for name, entry in REGISTRY.items()}


def make_objective(params, dataset_size: int, device: torch.device):
    """The callable objective for params.objective, built once per run as its registry entry says."""
    entry = REGISTRY[params.objective]
    return globals()[entry.build](params, dataset_size, device) if entry.build else OBJECTIVES[params.objective]
