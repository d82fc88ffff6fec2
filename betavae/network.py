"""The convolutional VAE of Burgess et al. 2018 (appendix A.1): the network and nothing else (models.py names it).

Edit freely: speed code (betavae/speed/kernels.py) checks these layers against the pattern each kernel implements
and leaves an edited network's layers as they are. Checkpoints store the shape (channels, latent_dim) beside the
weights, so keep VAE(channels, latent_dim) as the constructor.
"""
from __future__ import annotations

import torch
from torch import nn


class Encoder(nn.Module):
    """4 × conv(32, 4×4, stride 2) → FC 256 → FC 256 → 2·latent_dim (μ and log σ² of q(z|x))."""

    def __init__(self, channels: int, latent_dim: int):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(channels, 32, 4, 2, 1), nn.ReLU(),  # [B, C, 64, 64] → [B, 32, 32, 32]
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),        # → [B, 32, 16, 16]
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),        # → [B, 32, 8, 8]
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),        # → [B, 32, 4, 4]
        )
        self.fc = nn.Sequential(
            nn.Linear(32 * 4 * 4, 256), nn.ReLU(),        # [B, 512] → [B, 256]
            nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, 2 * latent_dim),               # → [B, 2·D]
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.convs(x).flatten(1)                      # [B, 512]
        mu, logvar = self.fc(h).chunk(2, dim=1)           # [B, D] each
        return mu, logvar


class Decoder(nn.Module):
    """The encoder mirrored: FC 256 → FC 256 → FC 512 → 4 × transposed conv; returns logits before the sigmoid."""

    def __init__(self, channels: int, latent_dim: int):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, 256), nn.ReLU(),        # [B, D] → [B, 256]
            nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, 32 * 4 * 4), nn.ReLU(),        # → [B, 512]
        )
        self.deconvs = nn.Sequential(
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),  # [B, 32, 4, 4] → [B, 32, 8, 8]
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),  # → [B, 32, 16, 16]
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),  # → [B, 32, 32, 32]
            nn.ConvTranspose2d(32, channels, 4, 2, 1),       # → [B, C, 64, 64] logits
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, 32, 4, 4)                 # [B, 32, 4, 4]
        return self.deconvs(h)                            # [B, C, 64, 64]


class VAE(nn.Module):
    """Gaussian encoder q(z|x) = N(μ, diag σ²), standard-normal prior p(z), decoder p(x|z)."""

    def __init__(self, channels: int = 1, latent_dim: int = 10):
        super().__init__()
        self.channels, self.latent_dim = channels, latent_dim
        self.encoder = Encoder(channels, latent_dim)
        self.decoder = Decoder(channels, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)  # reparameterisation (Kingma & Welling 2014)
        return self.decoder(z), mu, logvar, z
