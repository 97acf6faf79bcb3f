"""The general energy: an MLP over the pair [x, z] with a confining term."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lvebm_lightning.energies.base import check_network, mlp


class MLPEnergy(nn.Module):
    """E(x, z) = f_theta([x, z]) + (gamma / 2)(|x|^2 + |z|^2).

    f_theta is an MLP with ``depth`` hidden layers of ``width`` units and a scalar output. Spectral
    normalisation of every linear layer bounds its Lipschitz constant, which keeps Langevin gradients tame.
    The confining term with gamma > 0 makes exp(-E) integrable whatever f_theta does at infinity (f_theta with
    a smooth activation grows at most linearly), the dissipativity that the convergence theory assumes.

    Args:
        dx: data dimension.
        dz: latent dimension (0 gives an EBM without latents).
        width: hidden units per layer.
        depth: number of hidden layers (>= 1).
        activation: one of silu, softplus, tanh, elu, gelu (smooth, so grad_x E is continuous).
        spectral_norm: wrap every linear layer in spectral normalisation.
        gamma: the confinement strength (>= 0).
    """

    def __init__(
        self,
        dx: int,
        dz: int,
        width: int = 128,
        depth: int = 2,
        activation: str = "silu",
        spectral_norm: bool = False,
        gamma: float = 0.0,
    ) -> None:
        super().__init__()
        if dx < 1 or dz < 0:
            raise ValueError(f"MLPEnergy needs dx >= 1 and dz >= 0, got dx={dx}, dz={dz}.")
        check_network("MLPEnergy", width, depth, activation, gamma)
        self.dx, self.dz, self.gamma = dx, dz, float(gamma)
        self.net = mlp(dx + dz, width, depth, 1, activation, spectral_norm)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        """Energies ``[...]`` of pairs x ``[..., dx]`` and z ``[..., dz]``."""
        xz = torch.cat([x, z], dim=-1) if self.dz else x
        e = self.net(xz).squeeze(-1)
        if self.gamma:
            e = e + 0.5 * self.gamma * (xz * xz).sum(-1)
        return e
