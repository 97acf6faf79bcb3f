"""A decoder-structured energy: the latent must explain the data.

    E(x, z) = E_prior(z) + |x - g(z)|^2 / (2 sigma^2) + (gamma / 2)(|x|^2 + |z|^2),
    E_prior(z) = |z|^2 / 2 + f(z),

with f and the decoder g MLPs. exp(-E) is integrable for any f that grows slower than |z|^2 (a smooth-activation
MLP grows at most linearly), so p(x, z) = exp(-E) / Z is a proper joint density: a non-linear factor model
p(z) p(x | z) with Gaussian observation noise of scale sigma, tilted by the confinement. Unlike a generic MLP over
[x, z], this family cannot ignore z: the only way to put mass near the data is through g(z).

The family declares its closed forms (``collapsible``; docs/design.md section 1, collapsed sampling). Completing the
square in x, with precision P = 1 / sigma^2 + gamma,

    x | z ~ N(g(z) / (1 + gamma sigma^2), I / P),
    E_z(z) = -log int exp(-E(x, z)) dx
           = |z|^2 / 2 + f(z) + (gamma / 2)|z|^2 + gamma |g(z)|^2 / (2 (1 + gamma sigma^2)) - (dx / 2) log(2 pi / P),

so int exp(-E_z) dz = Z. With some coordinates x_o observed, only the others integrate out: ``z_energy`` sums the
observed coordinates' terms of E and the missing coordinates' share of the marginal, and x_m | z, x_o is the same
Gaussian restricted to the missing coordinates (the noise is isotropic).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lvebm_lightning.energies.base import check_network, mlp


class DecoderEnergy(nn.Module):
    """E(x, z) = |z|^2 / 2 + f(z) + |x - g(z)|^2 / (2 sigma^2) + (gamma / 2)(|x|^2 + |z|^2).

    Args:
        dx: data dimension.
        dz: latent dimension (>= 1: the family is built around z).
        width, depth: hidden units and hidden layers of the decoder g and of the prior correction f.
        activation: a smooth activation (silu, softplus, tanh, elu, gelu).
        sigma: the observation-noise scale sigma > 0 (its initial value when ``learn_sigma``).
        learn_sigma: learn log sigma with the other parameters.
        gamma: the confinement strength (>= 0).
    """

    def __init__(
        self,
        dx: int,
        dz: int,
        width: int = 128,
        depth: int = 2,
        activation: str = "silu",
        sigma: float = 0.3,
        learn_sigma: bool = True,
        gamma: float = 0.0,
    ) -> None:
        super().__init__()
        if dx < 1 or dz < 1:
            raise ValueError(f"DecoderEnergy needs dx >= 1 and dz >= 1 (model.dz), got dx={dx}, dz={dz}.")
        check_network("DecoderEnergy", width, depth, activation, gamma)
        if not sigma > 0:
            raise ValueError(f"DecoderEnergy needs sigma > 0, got {sigma}.")
        self.dx, self.dz, self.gamma = dx, dz, float(gamma)
        self.decoder = mlp(dz, width, depth, dx, activation)
        self.prior = mlp(dz, width, depth, 1, activation)
        log_sigma = torch.tensor(math.log(sigma))
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    collapsible = True
    """x | z is Gaussian in closed form and the z-marginal energy is known (module docstring)."""

    @property
    def sigma(self) -> Tensor:
        return self.log_sigma.exp()

    def x_given_z(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """The law of x given z: mean g(z) / (1 + gamma sigma^2) ``[..., dx]`` and standard deviation P^(-1/2)
        (0-d), P = 1 / sigma^2 + gamma."""
        inv_var = torch.exp(-2.0 * self.log_sigma)
        precision = inv_var + self.gamma
        return self.decoder(z) * (inv_var / precision), precision.rsqrt()

    def z_energy(self, z: Tensor, x: Tensor | None = None, observed: Tensor | None = None) -> Tensor:
        """The energy ``[...]`` of z ``[..., dz]`` with the unobserved coordinates of x integrated out.

        Args:
            z: latents ``[..., dz]``.
            x: data ``[..., dx]`` (standardised), read where ``observed``; None: nothing observed (E_z, the marginal).
            observed: a 0/1 (or boolean) mask broadcastable to ``[..., dx]``, 1 where x is observed.

        Returns -log int exp(-E(x, z)) dx_m: the observed coordinates' terms (x_j - g_j)^2 / (2 sigma^2) +
        gamma x_j^2 / 2 and, for each missing one, gamma g_j^2 / (2 (1 + gamma sigma^2)) - log(2 pi / P) / 2.
        """
        z2 = (z * z).sum(-1)
        g = self.decoder(z)
        inv_var = torch.exp(-2.0 * self.log_sigma)
        precision = inv_var + self.gamma
        missing_term = 0.5 * self.gamma * g * g * (inv_var / precision) - 0.5 * torch.log(2.0 * math.pi / precision)
        e = 0.5 * (1.0 + self.gamma) * z2 + self.prior(z).squeeze(-1)
        if x is None:
            return e + missing_term.sum(-1)
        seen = observed.to(g.dtype)
        x = torch.where(seen > 0, x, torch.zeros_like(x))  # missing entries (NaN) never enter the sum
        residual = x - g
        observed_term = 0.5 * residual * residual * inv_var + 0.5 * self.gamma * x * x
        return e + (seen * observed_term + (1.0 - seen) * missing_term).sum(-1)

    def decode(self, z: Tensor) -> Tensor:
        """g(z), the mean of x given z: ``[..., dz] -> [..., dx]``."""
        return self.decoder(z)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        """Energies ``[...]`` of pairs x ``[..., dx]`` and z ``[..., dz]``."""
        z2 = (z * z).sum(-1)
        residual = x - self.decoder(z)
        e = 0.5 * z2 + self.prior(z).squeeze(-1)
        e = e + 0.5 * (residual * residual).sum(-1) * torch.exp(-2.0 * self.log_sigma)
        if self.gamma:
            e = e + 0.5 * self.gamma * ((x * x).sum(-1) + z2)
        return e
