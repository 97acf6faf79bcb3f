"""The module's sampling API: fresh chains outside training, in standardised units unless said otherwise.

``LVEBMModule`` inherits it; callbacks (metrics, galleries) and ``lvebm_lightning.inference`` call it:

- ``move_pairs``: pairs (x, z) moved by a kernel: joint Langevin on E(x, z), or, for an energy that declares a
  closed-form x | z and with ``collapsed`` on, Langevin on z under E_z and x | z drawn exactly
  (``particles.collapsed``);
- ``sample_joint``: n pairs (x, z) from N(0, I) moved by T_eval steps of ``move_pairs`` (the model's own p(x, z));
- ``infer_standardised``: K fresh conditional chains z | x per datum, for standardised data;
- ``model_samples``: ``sample_joint`` computed once per step and shared by the callbacks;
- ``long_chain_config``: the kernel of those chains (``sampler.long_chains``), the negative pool's step function
  unless ``long_chains.kernel`` names another, so that they sample the law the pool was trained against;
- ``draw_generator``: a generator of the draws stream, which never touches the training streams.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lvebm_lightning.energies.base import cached_weights
from lvebm_lightning.langevin import LangevinConfig, langevin
from lvebm_lightning.particles import conditional_langevin
from lvebm_lightning.particles.collapsed import collapsed_langevin
from lvebm_lightning.seeding import STREAM_DRAWS, make_generator


class SamplingAPI:
    """Fresh chains of an ``LVEBMModule`` (needs ``energy``, ``dx``, ``dz``, ``seed``, ``data_mean``, ``data_std``,
    ``long_chains``, ``negative_config`` and ``posterior`` from the module)."""

    energy: nn.Module
    dx: int
    dz: int
    seed: int
    data_mean: Tensor
    data_std: Tensor
    long_chains: dict[str, Any]
    negative_config: LangevinConfig
    collapsed: bool
    posterior: Any
    _sample_cache: dict[tuple, Tensor]

    def joint_energy(self, xz: Tensor) -> Tensor:
        """E of concatenated pairs ``[..., dx + dz]``."""
        return self.energy(xz[..., : self.dx], xz[..., self.dx :])

    def to_data_units(self, x_std: Tensor) -> Tensor:
        return x_std * self.data_std + self.data_mean

    def to_standard_units(self, x: Tensor) -> Tensor:
        return (x - self.data_mean) / self.data_std

    def long_chain_config(
        self, n_steps: int | None = None, step_size: float | None = None, kernel: str | None = None
    ) -> LangevinConfig:
        """T_eval steps of h_eval (default h_n) of ``kernel``, else ``long_chains.kernel``, else the negative
        pool's step function: every chain outside training (long chains, inference, reconstruction, AIS) runs
        a step function that the config names."""
        return LangevinConfig(
            step_size=step_size or self.long_chains["step_size"] or self.negative_config.step_size,
            n_steps=self.long_chains["n_steps"] if n_steps is None else n_steps,
            kernel=kernel or self.long_chains.get("kernel") or self.negative_config.kernel,
            compile=self.negative_config.compile, autocast=self.negative_config.autocast,
        )

    def move_pairs(
        self, xz: Tensor, config: LangevinConfig, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """Pairs ``[B, dx + dz]`` after T steps of ``config`` (collapsed where ``collapsed``) and the mean
        acceptance (0-d)."""
        if self.collapsed:
            return collapsed_langevin(self.energy, xz, self.dx, config, generator)
        return langevin(self.joint_energy, xz, config, generator)

    def draw_generator(self, *keys: int) -> torch.Generator:
        """A generator of this rank's draws stream (model samples, inference, metrics), keyed by ``keys``."""
        rank = self.trainer.global_rank if self._trainer is not None else 0
        return make_generator(self.device, self.seed, rank, STREAM_DRAWS, *keys)

    @torch.no_grad()
    def sample_joint(
        self, n: int, n_steps: int | None = None, step_size: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Fresh long chains: n pairs ``[n, dx + dz]`` from N(0, I) moved by T_eval steps (``move_pairs``)."""
        generator = generator or self.draw_generator(self.global_step)
        xz = torch.randn(n, self.dx + self.dz, generator=generator, device=self.device)
        with cached_weights(self.energy):
            xz, _ = self.move_pairs(xz, self.long_chain_config(n_steps, step_size), generator)
        return xz

    @torch.no_grad()
    def infer_standardised(
        self, x_std: Tensor, n_particles: int, n_steps: int | None = None, step_size: float | None = None,
        generator: torch.Generator | None = None, z_start: Tensor | None = None,
    ) -> Tensor:
        """Posterior particles ``[B, K, dz]`` for standardised data ``[B, dx]`` from fresh conditional chains of
        T_eval steps (h_z and the posterior's step function unless given), started from N(0, I) or from
        ``z_start`` ``[B, K, dz]``."""
        generator = generator or self.draw_generator(self.global_step, 1)
        if z_start is None:
            z = torch.randn(x_std.shape[0], n_particles, self.dz, generator=generator, device=self.device)
        else:
            z = z_start.to(self.device)
        config = self.long_chain_config(
            n_steps, step_size or self.posterior.config.step_size, self.posterior.config.kernel
        )
        with cached_weights(self.energy):
            return conditional_langevin(self.energy, x_std, z, config, generator)

    def model_samples(self, n: int, n_steps: int | None = None) -> Tensor:
        """This rank's fresh-chain pairs ``[n, dx + dz]`` for the current step, computed once and shared by the
        metric and gallery callbacks."""
        key = (self.global_step, n, n_steps)
        if key not in self._sample_cache:
            self._sample_cache = {key: self.sample_joint(n, n_steps)}
        return self._sample_cache[key]
