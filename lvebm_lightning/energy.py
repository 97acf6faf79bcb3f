"""Energy networks E_theta(x, z) of a latent-variable EBM, p(x, z) = exp(-E(x, z)) / Z."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

Energy = Callable[[Tensor, Tensor], Tensor]
"""A joint energy: x ``[..., dx]`` and z ``[..., dz]`` to E(x, z) ``[...]`` (an ``MLPEnergy``, or any callable)."""


def on_pairs(energy: Energy, dx: int) -> Callable[[Tensor], Tensor]:
    """The energy of concatenated pairs ``[..., dx + dz]``, E([x, z]) = energy(x, z): the joint kernel's target."""
    return lambda xz: energy(xz[..., :dx], xz[..., dx:])

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}


def check_network(name: str, width: int, depth: int, activation: str, gamma: float) -> None:
    """Raise a ValueError naming ``name`` for a network size, activation or confinement it cannot use."""
    if width < 1 or depth < 1:
        raise ValueError(f"{name} needs width >= 1 and depth >= 1, got width={width}, depth={depth}.")
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unknown activation '{activation}'; choose one of {sorted(ACTIVATIONS)}.")
    if gamma < 0:
        raise ValueError(f"The confinement gamma must be >= 0, got {gamma}.")


def mlp(n_in: int, width: int, depth: int, n_out: int, activation: str, spectral_norm: bool = False) -> nn.Sequential:
    """n_in -> ``depth`` hidden layers of ``width`` units -> n_out, a smooth activation between the linear layers
    (each optionally spectral-normalised)."""
    sizes = [n_in] + [width] * depth + [n_out]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(a, b)
        layers.append(nn.utils.parametrizations.spectral_norm(linear) if spectral_norm else linear)
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


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
