"""The amortised posterior (a baseline): an encoder q_phi(z | x) trained on the ELBO alongside the energy."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lvebm_lightning.energies.base import ACTIVATIONS, Energy
from lvebm_lightning.langevin import LangevinConfig, energy_and_grad
from lvebm_lightning.particles.chains import FreshChains, conditional_langevin


class AmortisedPosterior(nn.Module):
    """An encoder q_phi(z | x) = N(mu_phi(x), diag sigma_phi(x)^2) trained on the ELBO (amortised baseline).

    The encoder is an MLP x -> (mu, log sigma) ``[B, 2 dz]`` (``depth`` hidden layers of ``width`` units, a smooth
    ``activation`` as in ``MLPEnergy``); its last layer starts at mu = 0, sigma = init_scale, so q_phi starts as
    the other strategies' init distribution. For fixed theta it maximises, per datum,

        ELBO_phi(x) = E_{q_phi(z|x)}[-E(x, z)] + H(q_phi(.|x)),    H = sum_j log sigma_j + (dz / 2) log(2 pi e),

    which equals log p(x) + log Z - KL(q_phi || p(z | x)), with the reparameterisation z = mu + sigma eps.
    The positive phase uses K samples per datum, detached, moved by T_z conditional Langevin steps (T_z = 0:
    the encoder's samples as they are).

    Args:
        dx, dz: data and latent dimensions (dz >= 1).
        n_particles: K samples per datum.
        langevin: the refinement kernel's settings (h_z, T_z >= 0).
        init_scale: sigma of q_phi at initialisation.
        width, depth, activation: the encoder MLP.
        lr: the encoder's Adam learning rate (constant).
        max_scale: the bound on every sigma_j, in standardised units.
        max_mean: the bound on every |mu_j| (mu = max_mean tanh(raw / max_mean); None: unbounded).

    Why the bounds (docs/benchmarks.md "Baselines"): the latent's location and scale are not identified, so an unbounded
    encoder drifts, the energy follows its samples down faster than the negative pool can follow, and the model
    grows a deep valley far from where the pool and the quadrature box are (the ELBO then reads tens of nats
    above log p(x)). The other strategies start every latent from N(0, init_scale^2) and the pool re-initialises
    there, and on average a posterior is no wider than the prior (E Var(z | x) <= Var z), so sigma <= 1 and
    |mu| <= 4 (a standard normal passes 4 with probability 6e-5) restrict q_phi only where the pool never goes.
    """

    trainable = True

    def __init__(
        self, dx: int, dz: int, n_particles: int, langevin: LangevinConfig, init_scale: float = 1.0,
        width: int = 128, depth: int = 2, activation: str = "silu", lr: float = 1e-3,
        max_scale: float = 1.0, max_mean: float | None = 4.0,
    ) -> None:
        super().__init__()
        if dz < 1:
            raise ValueError(f"The amortised posterior needs latents (model.dz >= 1), got dz={dz}.")
        if n_particles < 1:
            raise ValueError(f"n_particles (K) must be >= 1, got {n_particles}; use at least one particle.")
        if not lr > 0:
            raise ValueError(f"The encoder's lr must be > 0, got {lr}; set sampler.posterior.encoder.lr.")
        if not max_scale > 0:
            raise ValueError(
                f"The encoder's max_scale must be > 0, got {max_scale}; set sampler.posterior.encoder.max_scale."
            )
        if max_mean is not None and not max_mean > 0:
            raise ValueError(
                f"The encoder's max_mean must be > 0 or None, got {max_mean}; set sampler.posterior.encoder.max_mean."
            )
        if not init_scale > 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale}; set sampler.posterior.init_scale.")
        if activation not in ACTIVATIONS:
            raise ValueError(f"Unknown encoder activation '{activation}'; choose one of {sorted(ACTIVATIONS)}.")
        if width < 1 or depth < 1:
            raise ValueError(f"The encoder needs width >= 1 and depth >= 1, got width={width}, depth={depth}.")
        self.dz, self.n_particles, self.config, self.lr = dz, n_particles, langevin, float(lr)
        self.log_sigma_max = math.log(max_scale)
        self.max_mean = None if max_mean is None else float(max_mean)
        self.store = None
        sizes = [dx] + [width] * depth
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), ACTIVATIONS[activation]()]
        head = nn.Linear(width, 2 * dz)
        # q_phi starts as N(0, init_scale^2 I) for every x: the init distribution of the other strategies.
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        head.bias.data[dz:] = math.log(min(init_scale, max_scale))
        self.encoder = nn.Sequential(*layers, head)

    def setup(
        self, n_data: int, dz: int, rank: int, world_size: int, device: torch.device, generator: torch.Generator
    ) -> None:
        """Nothing to set up: the encoder is built with the module and moved with it."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """mu_phi(x) and log sigma_phi(x), each ``[B, dz]``, for x ``[B, dx]``."""
        mu, log_sigma = self.encoder(x).chunk(2, dim=-1)
        if self.max_mean is not None:
            mu = self.max_mean * torch.tanh(mu / self.max_mean)
        return mu, log_sigma.clamp(max=self.log_sigma_max)

    def _sample(self, x: Tensor, n: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """z = mu + sigma eps ``[B, n, dz]`` (with its graph into phi) and log sigma ``[B, dz]``."""
        mu, log_sigma = self(x)
        eps = torch.randn((x.shape[0], n, self.dz), generator=generator, device=x.device, dtype=x.dtype)
        return mu.unsqueeze(1) + log_sigma.exp().unsqueeze(1) * eps, log_sigma

    def particles(self, energy: Energy, x: Tensor, index: Tensor | None, generator: torch.Generator | None) -> Tensor:
        """K samples of q_phi(. | x_i) per datum, detached, then T_z conditional Langevin steps ``[B, K, dz]``."""
        with torch.no_grad():
            z, _ = self._sample(x, self.n_particles, generator)
        return conditional_langevin(energy, x, z, self.config, generator)

    def evaluation_particles(
        self, energy: Energy, x: Tensor, index: Tensor | None, generator: torch.Generator | None,
        fresh_chains: FreshChains,
    ) -> Tensor:
        """The encoder's samples, refined ``[B, K, dz]``, as in training."""
        return self.particles(energy, x, index, generator)

    def _entropy(self, log_sigma: Tensor) -> Tensor:
        """H(q_phi(. | x_i)) ``[B]`` of the diagonal Gaussian."""
        return log_sigma.sum(-1) + 0.5 * self.dz * (1.0 + math.log(2.0 * math.pi))

    def loss(self, energy: Energy, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """-mean_i ELBO_phi(x_i) (to minimise over phi), from K fresh reparameterised samples per datum.

        theta is held fixed: grad_z E(x, z) is taken with respect to the samples only (as the Langevin kernel
        takes it), so no gradient of theta is built, and the loss is assembled as

            mean_{i,k} [E(x_i, z_ik) + <g_ik, z_ik - stop(z_ik)>] - mean_i H_i,    g_ik = stop(grad_z E(x_i, z_ik)),

        whose value is mean E - mean H and whose gradient in phi is the reparameterised ELBO gradient
        mean <g_ik, d z_ik / d phi> - mean d H_i / d phi.
        """
        z, log_sigma = self._sample(x, self.n_particles, generator)
        xk = x.unsqueeze(1).expand(-1, z.shape[1], -1)
        e, grad = energy_and_grad(lambda zz: energy(xk, zz), z)
        surrogate = (grad * (z - z.detach())).sum(-1)
        return (e + surrogate).mean() - self._entropy(log_sigma).mean()

    @torch.no_grad()
    def elbo(self, energy: Energy, x: Tensor, n_samples: int, generator: torch.Generator | None) -> Tensor:
        """ELBO_phi(x_i) + log Z = E_q[-E(x_i, z)] + H(q) ``[B]`` (float64), E_q estimated with S = ``n_samples``.

        q_phi's density is known exactly, so this is a valid bound with no bandwidth to choose; subtract log Z.
        """
        z, log_sigma = self._sample(x, n_samples, generator)
        e = energy(x.unsqueeze(1).expand(-1, n_samples, -1), z).to(torch.float64)
        return -e.mean(1) + self._entropy(log_sigma).to(torch.float64)

    def configure_optimizer(self) -> torch.optim.Optimizer:
        """Adam on the encoder's parameters phi, at the constant learning rate ``lr``."""
        return torch.optim.Adam(self.parameters(), lr=self.lr)
