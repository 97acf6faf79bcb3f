"""Posterior strategies: how the positive phase gets latent particles z ~ p(z | x_i).

All strategies answer one call, ``particles(energy, x, index, generator) -> z [B, K, dz]``:

- ``PersistentPosterior`` (the method): K persistent particles per training datum, kept in a
  ``ParticleStore`` and moved by T_z steps of conditional Langevin on z -> E(x_i, z) each time datum i is
  in a batch, so the particles keep tracking p(z | x_i) as theta moves (a Wasserstein gradient flow of q_i).
- ``ShortRunPosterior`` (a baseline): K fresh chains from N(0, I) for every batch, T_z steps, nothing kept.
- ``AmortisedPosterior`` (a baseline): an encoder q_phi(z | x) = N(mu_phi(x), diag sigma_phi(x)^2) trained on
  the ELBO alongside the energy; K samples from it, optionally refined by T_z conditional steps.

The conditional energy of particles ``z [B, K, dz]`` is E(x_i, z_i^k), x broadcast over K.

The hook for strategies with trainable parts: every strategy has a class attribute ``trainable``. A trainable
strategy is an ``nn.Module`` (so it is a submodule of the LightningModule: its weights are in the checkpoint and
DDP averages its gradients) and provides ``loss(energy, x, generator)``, a scalar whose gradient reaches its own
parameters only (never theta), and ``configure_optimizer()``, the optimizer of those parameters. The module adds
that loss to its energy loss before its one backward and steps both optimizers.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from lvebm_lightning.energy import _ACTIVATIONS
from lvebm_lightning.langevin import LangevinConfig, energy_and_grad, langevin
from lvebm_lightning.particles import ParticleStore


def conditional_langevin(
    energy: Any, x: Tensor, z: Tensor, config: LangevinConfig, generator: torch.Generator | None
) -> Tensor:
    """Move ``z [B, K, dz]`` by Langevin on z -> E(x_i, z) with x ``[B, dx]`` held fixed (dz = 0: nothing to move)."""
    if z.shape[-1] == 0:
        return z
    xk = x.unsqueeze(1).expand(-1, z.shape[1], -1)
    z, _ = langevin(lambda zz: energy(xk, zz), z, config, generator)
    return z


class PersistentPosterior:
    """K persistent Langevin particles per training datum (the LVEBM posterior of the design, step 1).

    Args:
        n_particles: K.
        langevin: the conditional kernel's settings (h_z, T_z, extras).
        init_scale: particles start from N(0, init_scale^2 I).
    """

    persistent = True
    trainable = False

    def __init__(self, n_particles: int, langevin: LangevinConfig, init_scale: float = 1.0) -> None:
        if n_particles < 1:
            raise ValueError(f"n_particles (K) must be >= 1, got {n_particles}; use at least one particle.")
        self.n_particles, self.config, self.init_scale = n_particles, langevin, init_scale
        self.store: ParticleStore | None = None

    def setup(
        self, n_data: int, dz: int, rank: int, world_size: int, device: torch.device, generator: torch.Generator
    ) -> None:
        """Create this rank's shard of the store and draw its particles from the init distribution."""
        self.store = ParticleStore(n_data, self.n_particles, dz, rank, world_size).to(device)
        self.store.init_(generator, self.init_scale)

    def particles(self, energy: Any, x: Tensor, index: Tensor, generator: torch.Generator | None) -> Tensor:
        """Run T_z conditional steps on the stored particles of ``index`` and write them back."""
        assert self.store is not None, "PersistentPosterior.setup() must run before particles()"
        z = conditional_langevin(energy, x, self.store.get(index), self.config, generator)
        self.store.set(index, z)
        return z


class ShortRunPosterior:
    """Fresh chains from N(0, init_scale^2 I) for every batch (short-run MCMC baseline); no state."""

    persistent = False
    trainable = False

    def __init__(self, n_particles: int, langevin: LangevinConfig, init_scale: float = 1.0) -> None:
        if n_particles < 1:
            raise ValueError(f"n_particles (K) must be >= 1, got {n_particles}; use at least one particle.")
        self.n_particles, self.config, self.init_scale = n_particles, langevin, init_scale
        self.store = None
        self.dz = 0

    def setup(
        self, n_data: int, dz: int, rank: int, world_size: int, device: torch.device, generator: torch.Generator
    ) -> None:
        self.dz = dz

    def particles(self, energy: Any, x: Tensor, index: Tensor, generator: torch.Generator | None) -> Tensor:
        shape = (x.shape[0], self.n_particles, self.dz)
        z0 = self.init_scale * torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
        return conditional_langevin(energy, x, z0, self.config, generator)


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
    """

    persistent = False
    trainable = True
    LOG_SIGMA_MAX = 5.0
    """log sigma is capped here (sigma <= 148 in standardised units) so that a runaway encoder cannot overflow."""

    def __init__(
        self, dx: int, dz: int, n_particles: int, langevin: LangevinConfig, init_scale: float = 1.0,
        width: int = 128, depth: int = 2, activation: str = "silu", lr: float = 1e-3,
    ) -> None:
        super().__init__()
        if dz < 1:
            raise ValueError(f"The amortised posterior needs latents (model.dz >= 1), got dz={dz}.")
        if n_particles < 1:
            raise ValueError(f"n_particles (K) must be >= 1, got {n_particles}; use at least one particle.")
        if not lr > 0:
            raise ValueError(f"The encoder's lr must be > 0, got {lr}; set sampler.posterior.encoder.lr.")
        if not init_scale > 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale}; set sampler.posterior.init_scale.")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"Unknown encoder activation '{activation}'; choose one of {sorted(_ACTIVATIONS)}.")
        if width < 1 or depth < 1:
            raise ValueError(f"The encoder needs width >= 1 and depth >= 1, got width={width}, depth={depth}.")
        self.dz, self.n_particles, self.config, self.lr = dz, n_particles, langevin, float(lr)
        self.store = None
        sizes = [dx] + [width] * depth
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), _ACTIVATIONS[activation]()]
        head = nn.Linear(width, 2 * dz)
        # q_phi starts as N(0, init_scale^2 I) for every x: the init distribution of the other strategies.
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        head.bias.data[dz:] = math.log(init_scale)
        self.encoder = nn.Sequential(*layers, head)

    def setup(
        self, n_data: int, dz: int, rank: int, world_size: int, device: torch.device, generator: torch.Generator
    ) -> None:
        """Nothing to set up: the encoder is built with the module and moved with it."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """mu_phi(x) and log sigma_phi(x), each ``[B, dz]``, for x ``[B, dx]``."""
        mu, log_sigma = self.encoder(x).chunk(2, dim=-1)
        return mu, log_sigma.clamp(max=self.LOG_SIGMA_MAX)

    def _sample(self, x: Tensor, n: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """z = mu + sigma eps ``[B, n, dz]`` (with its graph into phi) and log sigma ``[B, dz]``."""
        mu, log_sigma = self(x)
        eps = torch.randn((x.shape[0], n, self.dz), generator=generator, device=x.device, dtype=x.dtype)
        return mu.unsqueeze(1) + log_sigma.exp().unsqueeze(1) * eps, log_sigma

    def particles(self, energy: Any, x: Tensor, index: Tensor | None, generator: torch.Generator | None) -> Tensor:
        """K samples of q_phi(. | x_i) per datum, detached, then T_z conditional Langevin steps ``[B, K, dz]``."""
        with torch.no_grad():
            z, _ = self._sample(x, self.n_particles, generator)
        return conditional_langevin(energy, x, z, self.config, generator)

    def _entropy(self, log_sigma: Tensor) -> Tensor:
        """H(q_phi(. | x_i)) ``[B]`` of the diagonal Gaussian."""
        return log_sigma.sum(-1) + 0.5 * self.dz * (1.0 + math.log(2.0 * math.pi))

    def loss(self, energy: Any, x: Tensor, generator: torch.Generator | None) -> Tensor:
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
    def elbo(self, energy: Any, x: Tensor, n_samples: int, generator: torch.Generator | None) -> Tensor:
        """ELBO_phi(x_i) + log Z = E_q[-E(x_i, z)] + H(q) ``[B]`` (float64), E_q estimated with S = ``n_samples``.

        q_phi's density is known exactly, so this is a valid bound with no bandwidth to choose; subtract log Z.
        """
        z, log_sigma = self._sample(x, n_samples, generator)
        e = energy(x.unsqueeze(1).expand(-1, n_samples, -1), z).to(torch.float64)
        return -e.mean(1) + self._entropy(log_sigma).to(torch.float64)

    def configure_optimizer(self) -> torch.optim.Optimizer:
        """Adam on the encoder's parameters phi, at the constant learning rate ``lr``."""
        return torch.optim.Adam(self.parameters(), lr=self.lr)


Posterior = PersistentPosterior | ShortRunPosterior | AmortisedPosterior
POSTERIORS: dict[str, type[Posterior]] = {
    "persistent": PersistentPosterior, "short_run": ShortRunPosterior, "amortised": AmortisedPosterior,
}


def build_posterior(
    kind: str, dx: int | None = None, dz: int | None = None, encoder: dict[str, Any] | None = None, **kwargs: Any
) -> Posterior:
    """The posterior strategy named ``kind`` (one of ``POSTERIORS``).

    ``kwargs`` (n_particles, langevin, init_scale) go to every strategy; a trainable one (the amortised encoder)
    also gets dx, dz and its ``encoder`` settings (width, depth, activation, lr), which the others ignore.
    """
    if kind not in POSTERIORS:
        raise ValueError(f"Unknown posterior kind '{kind}'; choose one of {sorted(POSTERIORS)}.")
    cls = POSTERIORS[kind]
    if cls.trainable:
        kwargs.update(dx=dx, dz=dz, **(encoder or {}))
    return cls(**kwargs)
