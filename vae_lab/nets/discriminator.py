"""FactorVAE's discriminator: an MLP on latent codes with two logits (q(z) vs the permuted product of marginals)."""

import torch
from torch import nn


class Discriminator(nn.Module):
    """z (B, D) -> logits (B, 2); `layers` hidden layers of `hidden` units, LeakyReLU 0.2 (Kim & Mnih 2018, App. A)."""

    def __init__(self, latent_dim: int, hidden: int = 1000, layers: int = 6):
        super().__init__()
        widths = [latent_dim] + [hidden] * layers
        blocks = []
        for d_in, d_out in zip(widths[:-1], widths[1:]):
            blocks += [nn.Linear(d_in, d_out), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*blocks, nn.Linear(widths[-1], 2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    def log_density_ratio(self, z: torch.Tensor) -> torch.Tensor:
        """log D(z) / (1 - D(z)) = logit_0 - logit_1: the per-example TC estimate (B,)."""
        logits = self(z).float()
        return logits[:, 0] - logits[:, 1]
