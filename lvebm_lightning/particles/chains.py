"""Particle posterior strategies: persistent particles (the method) and short-run chains (a baseline).

Both answer ``particles(energy, x, index, generator) -> z [B, K, dz]`` by conditional Langevin on
z -> E(x_i, z) with x broadcast over the K particles (``conditional_langevin``), and
``evaluation_particles(..., fresh_chains)`` for the ELBO.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lvebm_lightning.energies.base import Energy
from lvebm_lightning.langevin import LangevinConfig, langevin
from lvebm_lightning.particles.store import ParticleStore


def conditional_langevin(
    energy: Energy, x: Tensor, z: Tensor, config: LangevinConfig, generator: torch.Generator | None
) -> Tensor:
    """Move ``z [B, K, dz]`` by Langevin on z -> E(x_i, z) with x ``[B, dx]`` held fixed (dz = 0: nothing to move)."""
    if z.shape[-1] == 0:
        return z
    xk = x.unsqueeze(1).expand(-1, z.shape[1], -1)
    z, _ = langevin(lambda zz: energy(xk, zz), z, config, generator)
    return z

FreshChains = Callable[[Tensor, int], Tensor]
"""(x ``[B, dx]``, K) -> particles ``[B, K, dz]`` of fresh conditional chains (``LVEBMModule.infer_standardised``)."""


class PersistentPosterior:
    """K persistent Langevin particles per training datum (the LVEBM posterior of the design, step 1).

    Args:
        n_particles: K.
        langevin: the conditional kernel's settings (h_z, T_z, extras).
        init_scale: particles start from N(0, init_scale^2 I).
        store_device: None (the store lives on the training device) or ``cpu`` (pinned host memory, batches moved
            to the device without blocking: for N K dz beyond the device's memory).
    """

    trainable = False

    def __init__(
        self, n_particles: int, langevin: LangevinConfig, init_scale: float = 1.0, store_device: str | None = None
    ) -> None:
        if n_particles < 1:
            raise ValueError(f"n_particles (K) must be >= 1, got {n_particles}; use at least one particle.")
        if store_device not in (None, "cpu"):
            raise ValueError(f"sampler.posterior.store_device must be null or cpu, got {store_device!r}.")
        self.n_particles, self.config, self.init_scale = n_particles, langevin, init_scale
        self.store_device = store_device
        self.store: ParticleStore | None = None

    def setup(
        self, n_data: int, dz: int, rank: int, world_size: int, device: torch.device, generator: torch.Generator
    ) -> None:
        """Create this rank's shard of the store and draw its particles from the init distribution."""
        self.store = ParticleStore(n_data, self.n_particles, dz, rank, world_size).to(device)
        self.store.init_(generator, self.init_scale)
        if self.store_device == "cpu":
            self.store.keep_on_host()

    def particles(self, energy: Energy, x: Tensor, index: Tensor, generator: torch.Generator | None) -> Tensor:
        """Run T_z conditional steps on the stored particles of ``index`` and write them back."""
        assert self.store is not None, "PersistentPosterior.setup() must run before particles()"
        z = conditional_langevin(energy, x, self.store.get(index), self.config, generator)
        self.store.set(index, z)
        return z

    def evaluation_particles(
        self, energy: Energy, x: Tensor, index: Tensor | None, generator: torch.Generator | None,
        fresh_chains: FreshChains,
    ) -> Tensor:
        """The stored particles ``[B, K, dz]`` of training data ``index`` (unmoved); without an index (data the
        store holds none of), K fresh chains."""
        if index is None:
            return fresh_chains(x, self.n_particles)
        assert self.store is not None, "PersistentPosterior.setup() must run before evaluation_particles(index)"
        return self.store.get(index)


class ShortRunPosterior:
    """Fresh chains from N(0, init_scale^2 I) for every batch (short-run MCMC baseline); no state."""

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

    def particles(self, energy: Energy, x: Tensor, index: Tensor, generator: torch.Generator | None) -> Tensor:
        shape = (x.shape[0], self.n_particles, self.dz)
        z0 = self.init_scale * torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
        return conditional_langevin(energy, x, z0, self.config, generator)

    def evaluation_particles(
        self, energy: Energy, x: Tensor, index: Tensor | None, generator: torch.Generator | None,
        fresh_chains: FreshChains,
    ) -> Tensor:
        """Fresh short-run chains ``[B, K, dz]``, as in training."""
        return self.particles(energy, x, index, generator)
