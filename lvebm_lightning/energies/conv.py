"""A convolutional energy for fields on a periodic square lattice (phi^4 and other lattice models).

    E(x, z) = sum_sites c(x, z)_s + (gamma / 2)(|x|^2 + |z|^2),

where x ``[..., side^2]`` is a field on a side x side periodic lattice (row-major, as ``data/systems.py`` writes
it) and c is a stack of 3 x 3 convolutions with circular padding over the field and the latent broadcast to every
site as extra channels. Circular padding and the sum over sites make E invariant under every lattice translation
of x, the symmetry of a translation-invariant action; the latent is a global variable shared by all sites (for
example the sign of the magnetisation in the ordered phase).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lvebm_lightning.energies.base import ACTIVATIONS, check_network


class ConvEnergy(nn.Module):
    """E(x, z) = sum over sites of a periodic CNN of (x, z) + (gamma / 2)(|x|^2 + |z|^2).

    Args:
        dx: the number of sites side^2 (a perfect square).
        dz: latent dimension (0 gives an EBM without latents).
        width: channels of every hidden convolution.
        depth: number of hidden 3 x 3 convolutions (>= 1); the receptive field is 2 depth + 1 sites wide.
        activation: a smooth activation (silu, softplus, tanh, elu, gelu).
        gamma: the confinement strength (>= 0).
    """

    def __init__(
        self, dx: int, dz: int, width: int = 32, depth: int = 2, activation: str = "silu", gamma: float = 0.0
    ) -> None:
        super().__init__()
        side = math.isqrt(dx)
        if side * side != dx or dz < 0:
            raise ValueError(
                f"ConvEnergy needs a square lattice (dx = side^2) and dz >= 0, got dx={dx}, dz={dz}; use it with "
                "lattice data such as data=phi4, or model/energy=mlp."
            )
        check_network("ConvEnergy", width, depth, activation, gamma)
        self.dx, self.dz, self.side, self.gamma = dx, dz, side, float(gamma)
        layers: list[nn.Module] = []
        channels = 1 + dz
        for _ in range(depth):
            layers += [nn.Conv2d(channels, width, 3, padding=1, padding_mode="circular"), ACTIVATIONS[activation]()]
            channels = width
        layers.append(nn.Conv2d(channels, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        """Energies ``[...]`` of fields x ``[..., side^2]`` and latents z ``[..., dz]``."""
        batch = x.shape[:-1]
        field = x.reshape(-1, 1, self.side, self.side)
        if self.dz:
            z = z.expand(*batch, self.dz)
            latent = z.reshape(-1, self.dz, 1, 1).expand(-1, self.dz, self.side, self.side)
            field = torch.cat([field, latent], dim=1)
        e = self.net(field).sum((-1, -2, -3)).reshape(batch)
        if self.gamma:
            e = e + 0.5 * self.gamma * ((x * x).sum(-1) + (z * z).sum(-1))
        return e
