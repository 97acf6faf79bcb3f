"""LVEBMModule: maximum-likelihood training of a latent-variable EBM by particle dynamics.

One ``training_step`` on a batch (x_i, i) is the three steps of docs/design.md section 1, with manual optimization:

1. ``positive_particles``: T_z conditional Langevin steps on the K persistent particles z_i^k of each datum;
2. ``negative_particles``: T_n Langevin steps (joint, or collapsed where the energy allows) on a batch of the
   persistent negative pool (x~, z~), a fraction rho re-initialised first (``callbacks.negative_pool.NegativePool``);
3. ``parameter_step``: one backward of  L = mean E(x_i, z_i^k) - mean E(x~, z~) + alpha (mean E_pos^2 + mean E_neg^2),
   gradient clipping, an optimizer step and a scheduler step, unless the divergence guard drops the update.

The inner loops call the energy directly (never through the DDP wrapper) and take gradients with respect to
particles only, in standardised units; the sampling API is ``training.sampling.SamplingAPI``.
"""

from __future__ import annotations

from typing import Any

import hydra.utils
import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from torch import Tensor

from lvebm_lightning.energies.base import cached_weights
from lvebm_lightning.langevin import LangevinConfig
from lvebm_lightning.particles import build_posterior
from lvebm_lightning.particles.collapsed import collapsible
from lvebm_lightning.seeding import STREAM_LATENT, gather_generator_states, make_generator, restore_generator
from lvebm_lightning.training import tracking
from lvebm_lightning.training.divergence import DivergenceGuard
from lvebm_lightning.training.sampling import SamplingAPI
from lvebm_lightning.training.step_logging import log_step, logging_this_step, total_norm


class LVEBMModule(SamplingAPI, pl.LightningModule):
    """A latent-variable EBM p(x, z) = exp(-E(x, z)) / Z trained by particle dynamics.

    All arguments are plain values and dicts (so checkpoints stay ``weights_only``-loadable):

    Args:
        dx, dz: data and latent dimensions.
        n_data: N, the number of training data (one particle set per datum).
        energy: the energy network's config, a Hydra ``_target_`` dict without dx / dz.
        optimizer: a Hydra ``_target_`` dict of a torch optimizer without ``params``.
        lr_scheduler: a Hydra ``_target_`` dict with ``_partial_: true`` of a torch scheduler without the
            optimizer (``lvebm_lightning.training.schedule.warmup_cosine`` by default), stepped once per batch.
        posterior: ``{"kind", "n_particles", "step_size", "n_steps", ...}`` for the conditional kernel.
        negative: ``{"batch_size", "step_size", "n_steps", ...}`` for the joint kernel on the pool.
        alpha: weight of the energy-magnitude regulariser alpha (E_pos^2 + E_neg^2).
        gradient_clip: clip the parameter gradient norm to this value (None: no clipping).
        divergence: ``{"policy": "skip" | "raise", "max_consecutive": int}`` (``DivergenceGuard``).
        long_chains: ``{"n_steps", "step_size", "n_samples", "kernel"}``: fresh long chains for the model's
            samples (``step_size`` and ``kernel`` None: those of the negative kernel).
        collapsed: collapsed moves of the pool and long chains where the energy allows (``particles.collapsed``).
        seed: the base seed of every rank's generators.
    """

    def __init__(
        self, dx: int, dz: int, n_data: int, energy: dict[str, Any], optimizer: dict[str, Any],
        lr_scheduler: dict[str, Any], posterior: dict[str, Any], negative: dict[str, Any], alpha: float,
        gradient_clip: float | None, divergence: dict[str, Any], long_chains: dict[str, Any], collapsed: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)  # train() logs the whole resolved config, flat, instead
        self.automatic_optimization = False
        self.dx, self.dz, self.n_data, self.seed = dx, dz, n_data, seed
        self.energy = hydra.utils.instantiate(energy, dx=dx, dz=dz)
        posterior = dict(posterior)
        self.posterior = build_posterior(
            posterior.pop("kind", "persistent"),
            n_particles=posterior.pop("n_particles", 1),
            init_scale=posterior.pop("init_scale", 1.0),
            store_device=posterior.pop("store_device", None),
            langevin=LangevinConfig.from_entry(posterior),
            dx=dx, dz=dz, encoder=posterior.pop("encoder", None),
        )
        self.negative_config = LangevinConfig.from_entry(negative)
        self.negative_batch_size = int(negative["batch_size"])
        self.collapsed = bool(collapsed) and collapsible(self.energy)
        self.alpha, self.gradient_clip = float(alpha), gradient_clip
        self.guard = DivergenceGuard(**divergence)
        self.long_chains = dict(long_chains)
        self.register_buffer("data_mean", torch.zeros(dx))
        self.register_buffer("data_std", torch.ones(dx))
        self.negative_pool: Any = None  # set by the NegativePool callback
        self.generator: torch.Generator | None = None
        self._pending_state: dict[str, Any] | None = None
        self._sample_cache: dict[tuple, Tensor] = {}
        self.run_config: dict[str, Any] | None = None  # the resolved config, set by train(), kept in checkpoints

    # -- set-up -----------------------------------------------------------------------------------------------
    def set_standardisation(self, mean: Tensor, std: Tensor) -> None:
        """Record the data module's standardisation x_std = (x - mean) / std."""
        self.data_mean.copy_(torch.as_tensor(mean, dtype=self.data_mean.dtype))
        self.data_std.copy_(torch.as_tensor(std, dtype=self.data_std.dtype))

    def on_fit_start(self) -> None:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        self.generator = make_generator(self.device, self.seed, rank, STREAM_LATENT)
        self.posterior.setup(self.n_data, self.dz, rank, world, self.device, self.generator)
        if self.negative_pool is None:
            raise RuntimeError(
                "LVEBMModule needs the NegativePool callback; add callbacks.negative_pool to the config "
                "(it is in conf/callbacks/default.yaml)."
            )
        if self._pending_state is not None:
            self._restore_particles(self._pending_state, rank, world)
            self._pending_state = None

    def configure_optimizers(self) -> Any:
        optimizer = hydra.utils.instantiate(self.hparams.optimizer, params=self.energy.parameters())
        scheduler = hydra.utils.instantiate(self.hparams.lr_scheduler)(optimizer)
        schedule = {"scheduler": scheduler, "interval": "step", "name": "train/lr"}  # name: LearningRateMonitor's
        config = {"optimizer": optimizer, "lr_scheduler": schedule}
        if self.posterior.trainable:  # a second optimizer, for the posterior's own parameters (an encoder's phi)
            return [config, {"optimizer": self.posterior.configure_optimizer()}]
        return config

    def configure_callbacks(self) -> list[pl.Callback]:
        """``train/lr`` (the rate each step uses) from Lightning's monitor, while fitting with a logger."""
        fitting = self.trainer.state.fn == "fit"
        return [LearningRateMonitor(logging_interval="step")] if fitting and self.trainer.loggers else []

    # -- training: the three steps of docs/design.md section 1 -----------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, index = batch
        log = logging_this_step(self)  # the train/* scalars only on the steps Lightning writes
        with cached_weights(self.energy):
            z, posterior_loss = self.positive_particles(x, index, check_owned=batch_idx == 0)
            pool_idx, xz_neg = self.negative_particles(log)
        return self.parameter_step(x, index, z, posterior_loss, pool_idx, xz_neg, log)

    def positive_particles(self, x: Tensor, index: Tensor, check_owned: bool) -> tuple[Tensor, Tensor | None]:
        """Step 1: the posterior particles ``[B, K, dz]`` after T_z conditional steps, and a trainable
        posterior's own loss (None for the particle strategies)."""
        if check_owned and self.posterior.store is not None:
            # Once an epoch: a sampler that does not shard by rank would move another rank's particles silently.
            self.posterior.store.check_owned(index)
        z = self.posterior.particles(self.energy, x, index, self.generator)
        loss = self.posterior.loss(self.energy, x, self.generator) if self.posterior.trainable else None
        return z, loss

    def negative_particles(self, log: bool = True) -> tuple[Tensor, Tensor]:
        """Step 2: a batch of pool rows (local indices ``[B]``) moved by T_n steps ``[B, dx + dz]`` (joint, or
        collapsed where the energy allows it)."""
        pool = self.negative_pool
        pool_idx, xz_neg = pool.draw(self.negative_batch_size)
        xz_neg, accept = self.move_pairs(xz_neg, self.negative_config, pool.generator)
        pool.write(pool_idx, xz_neg)
        if self.negative_config.metropolis and log:
            # MALA's acceptance of the pool's moves: near 0 means h_n is too large for the current energy.
            self.log("train/neg_accept", accept, on_step=True, on_epoch=False)
        return pool_idx, xz_neg

    def parameter_step(
        self, x: Tensor, index: Tensor, z: Tensor, posterior_loss: Tensor | None, pool_idx: Tensor, xz_neg: Tensor,
        log: bool = True,
    ) -> Tensor:
        """Step 3: the loss, one backward, clipping and the optimizer and scheduler steps (or a dropped update)."""
        optimizers = self.optimizers()
        opt, posterior_opt = optimizers if isinstance(optimizers, list) else (optimizers, None)
        e_pos = self.energy(x.unsqueeze(1).expand(-1, z.shape[1], -1), z)
        e_neg = self.joint_energy(xz_neg)
        loss = e_pos.mean() - e_neg.mean() + self.alpha * ((e_pos**2).mean() + (e_neg**2).mean())
        strategy = self.trainer.strategy
        checked = {"latent particles": z, "negative pool": xz_neg, "E_pos": e_pos, "E_neg": e_neg}
        bad = self.guard.nonfinite(strategy, checked)
        for optimizer in filter(None, (opt, posterior_opt)):
            optimizer.zero_grad(set_to_none=True)
        if bad:
            no_norm = torch.tensor(float("nan"), device=self.device)
            return self._skip(bad, index, pool_idx, loss, e_pos, e_neg, z, xz_neg, no_norm)
        # One backward of both losses: each reaches only its own parameters (theta or phi), and under DDP one
        # backward that touches every parameter is what the gradient reducer expects.
        self.manual_backward(loss if posterior_loss is None else loss + posterior_loss)
        grad_norm = total_norm(self.energy.parameters())
        # A non-finite encoder gradient drops the whole update too.
        both = grad_norm if posterior_loss is None else grad_norm + total_norm(self.posterior.parameters())
        if not self.guard.gradients_finite(strategy, both):
            opt.zero_grad(set_to_none=True)
            return self._skip(["parameter gradient"], index, pool_idx, loss, e_pos, e_neg, z, xz_neg, grad_norm)
        if self.gradient_clip is not None:
            self.clip_gradients(opt, gradient_clip_val=self.gradient_clip, gradient_clip_algorithm="norm")
        opt.step()
        if posterior_opt is not None:
            # Through the strategy (precision plugin, hooks) but not LightningOptimizer.step, which would count a
            # second global step per batch: global_step counts batches (docs/design.md section 1).
            strategy.optimizer_step(posterior_opt.optimizer, closure=lambda: None)
            if log:
                self.log("train/posterior_loss", posterior_loss.detach(), on_step=True, on_epoch=False)
        self.lr_schedulers().step()
        self.guard.good_step()
        if log:
            log_step(self, loss, e_pos, e_neg, z, xz_neg, grad_norm, skipped_steps=self.guard.skipped_steps)
        return loss.detach()

    def _skip(self, names: list[str], index: Tensor, pool_idx: Tensor, *logged: Tensor) -> Tensor:
        """Drop this update (the guard raises when it is one too many); re-initialise non-finite particles."""
        self.guard.bad_step(names, self.global_step)
        if self.posterior.store is not None:
            self.posterior.store.reinit_nonfinite_(index, self.generator)
        self.negative_pool.reinit_nonfinite_(pool_idx)
        log_step(self, *logged, skipped_steps=self.guard.skipped_steps)
        return logged[0].detach()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Metrics come from ``callbacks.metrics``, over the whole split."""

    test_step = validation_step

    # -- checkpoint -------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        store = self.posterior.store
        state: dict[str, Any] = self.guard.state_dict()
        if store is not None:
            state["particles"] = store.full().cpu()
        if self.generator is not None:
            state["generator_states"] = gather_generator_states(self.generator)
        checkpoint["lvebm"] = state
        if self.run_config is not None:
            checkpoint["config"] = self.run_config
        checkpoint.update(tracking.checkpoint_state(self.trainer))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._pending_state = checkpoint.get("lvebm")
        if self._pending_state:
            self._pending_state["step"] = int(checkpoint.get("global_step", 0))
            self.guard.load_state_dict(self._pending_state)

    def _restore_particles(self, state: dict[str, Any], rank: int, world: int) -> None:
        if self.posterior.store is not None and "particles" in state:
            self.posterior.store.load_full(state["particles"])
        self.generator = restore_generator(
            self.generator, state.get("generator_states", []), self.seed, rank, world, STREAM_LATENT, state["step"],
            "Checkpoint saved under %d rank(s), resumed under %d: re-sharded the posterior particles by datum index "
            "and re-seeded the latent generators from (seed, rank, step).",
        )

