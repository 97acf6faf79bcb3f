"""Collapsed moves of joint pairs (x, z): the kernel on z alone under its marginal energy, then x | z drawn exactly.

For an energy that declares a closed-form Gaussian x | z (``collapsible``: ``x_given_z`` and ``z_energy``, e.g.
``energies.decoder``), the pair (x, z) ~ p(x, z) is drawn as z ~ p(z) proportional to exp(-E_z(z)) by the shared
Langevin kernel, then x ~ p(x | z) exactly (Rao-Blackwellisation). It samples the same joint law as joint Langevin on
E(x, z) without the ridge x ~ g(z) of width sigma, whose curvature 1 / sigma^2 bounds the joint kernel's stable step
(docs/design.md section 1). The x that a pair held before the move is not read: x | z is drawn afresh.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lvebm_lightning.langevin import LangevinConfig, langevin


def collapsible(energy: nn.Module) -> bool:
    """Whether ``energy`` declares a closed-form Gaussian x | z and its z-marginal energy."""
    return bool(getattr(energy, "collapsible", False))


def draw_x_given_z(energy: nn.Module, z: Tensor, generator: torch.Generator | None) -> Tensor:
    """x ``[..., dx]`` ~ p(x | z) for z ``[..., dz]``: the energy's Gaussian mean plus its scale times N(0, I) noise."""
    mean, std = energy.x_given_z(z)
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + std * noise


@torch.no_grad()
def collapsed_langevin(
    energy: nn.Module, xz: Tensor, dx: int, config: LangevinConfig, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Move pairs ``[B, dx + dz]``: T steps of ``config``'s kernel on z under E_z, then x | z drawn exactly.

    Returns the new pairs ``[B, dx + dz]`` and the kernel's mean acceptance (0-d), as ``langevin`` does.
    """
    z, accept = langevin(energy.z_energy, xz[..., dx:], config, generator)
    return torch.cat([draw_x_given_z(energy, z, generator), z], dim=-1), accept


@torch.no_grad()
def collapsed_conditional(
    energy: nn.Module, x: Tensor, observed: Tensor, z: Tensor, config: LangevinConfig,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """Draws of the missing coordinates given the observed ones, with the missing ones integrated out of the chain.

    z ``[B, S, dz]`` moves by T steps of ``config``'s kernel under U(z) = -log int exp(-E(x, z)) dx_m (the energy's
    ``z_energy`` with x_o ``[B, dx]`` held where ``observed`` ``[B, dx]`` is 1), which targets p(z | x_o) exactly;
    then x_m | z is drawn exactly. Returns the completed data ``[B, S, dx]`` (x_o kept) and the final z.
    """
    xs = x.unsqueeze(1).expand(-1, z.shape[1], -1)
    seen = observed.unsqueeze(1).expand_as(xs)
    z, _ = langevin(lambda v: energy.z_energy(v, xs, seen), z, config, generator)
    drawn = draw_x_given_z(energy, z, generator)
    return torch.where(seen.bool(), xs, drawn), z
