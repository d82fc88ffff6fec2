"""Colour-, noisy- and scream-dSprites (disentanglement_lib's definitions) drawn from the dSprites mask, the image index
and a seed.

color_dsprites: the binary sprite times one colour per image drawn from U(0.5, 1)³, on black.
noisy_dsprites: the sprite in white on a background of U(0, 1) noise per pixel and channel.
scream_dsprites: a 64 × 64 crop of The Scream (shrunk to fit 350 × 274) at a uniform position, averaged with a colour
from U(0, 1)³, the sprite's pixels inverted.
The draws are a hash of (seed, image index, draw number), not a random stream, so an image is the same whenever and
wherever it is drawn: in a resumed run, in a metric, on another device.
"""
from __future__ import annotations

import torch

_MASK = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (Wellons' lowbias32) on int64 tensors holding values in [0, 2³²)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK  # int64 wraps on overflow, and the low 32 bits are exact either way
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK
    return x ^ (x >> 16)


def uniform(index: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """`count` draws from U[0, 1) per image index: [B] int64 -> float32 [B, count], a pure function of its inputs."""
    key = ((seed & _MASK) * 0x85EBCA6B + 0x27D4EB2F) & _MASK
    base = _hash32(((index.to(torch.int64) & _MASK) * 0x9E3779B1 ^ key) & _MASK)  # [B]
    counter = torch.arange(count, device=index.device, dtype=torch.int64) * 0x632BE5AB
    draws = _hash32(_hash32((base[:, None] + counter) & _MASK))  # [B, count]
    return (draws >> 8).to(torch.float32) / float(1 << 24)  # 24 bits: exact in float32, so never 1.0


def colour(mask: torch.Tensor, index: torch.Tensor, seed: int) -> torch.Tensor:
    """[B, 1, 64, 64] sprite in {0, 1} -> [B, 3, 64, 64]: the sprite in one colour from U(0.5, 1)³ per image, on black."""
    rgb = 0.5 + 0.5 * uniform(index, 3, seed)  # [B, 3]
    return mask * rgb[:, :, None, None]


def noisy(mask: torch.Tensor, index: torch.Tensor, seed: int) -> torch.Tensor:
    """[B, 1, 64, 64] sprite in {0, 1} -> [B, 3, 64, 64]: the sprite white (1) on U(0, 1) noise per pixel and channel."""
    size = mask.shape[-1]
    noise = uniform(index, 3 * size * size, seed).view(-1, 3, size, size)
    return torch.clamp(mask + noise, max=1.0)  # disentanglement_lib: minimum(observation + noise, 1)


def scream(picture: torch.Tensor, mask: torch.Tensor, index: torch.Tensor, seed: int) -> torch.Tensor:
    """[B, 1, 64, 64] sprite in {0, 1} -> [B, 3, 64, 64] on a crop of `picture` (float [3, H, W] in [0, 1])."""
    draws = uniform(index, 5, seed)                                           # [B, 5]: crop row, column, colour
    height, width = picture.shape[1] - 64, picture.shape[2] - 64
    rows = (draws[:, 0] * height).long()[:, None] + torch.arange(64, device=mask.device)  # [B, 64]
    columns = (draws[:, 1] * width).long()[:, None] + torch.arange(64, device=mask.device)
    crops = picture.to(mask.device)[:, rows[:, :, None], columns[:, None, :]].permute(1, 0, 2, 3)  # [B, 3, 64, 64]
    background = (crops + draws[:, 2:, None, None]) / 2
    return torch.where(mask.bool(), 1 - background, background)


VARIANTS = {"color_dsprites": colour, "noisy_dsprites": noisy, "scream_dsprites": scream}
