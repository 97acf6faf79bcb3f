"""What every energy network E_theta(x, z) shares: the callable type, its layers, its checks and cached weights."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from torch import Tensor, nn
from torch.nn.utils import parametrize

Energy = Callable[[Tensor, Tensor], Tensor]
"""A joint energy: x ``[..., dx]`` and z ``[..., dz]`` to E(x, z) ``[...]`` (a module of this package, or any
callable)."""


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


def cached_weights(energy: nn.Module) -> AbstractContextManager[Any]:
    """Compute spectral-normalised weights once per inner loop rather than once per Langevin step."""
    parametrized = any(parametrize.is_parametrized(m) for m in energy.modules())
    return parametrize.cached() if parametrized else nullcontext()
