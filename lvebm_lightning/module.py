"""LVEBMModule: maximum-likelihood training of a latent-variable EBM by particle dynamics.

One ``training_step`` on a batch (x_i, i) does, with manual optimization (DESIGN.md section 1):

1. T_z conditional Langevin steps on the K persistent particles z_i^k of each datum (the posterior store);
2. T_n joint Langevin steps on a batch of the persistent negative pool (x~, z~), a fraction rho of it
   re-initialised first (the pool is kept by ``callbacks.negative_pool.NegativePool``);
3. one backward of  L = mean E(x_i, z_i^k) - mean E(x~, z~) + alpha (mean E_pos^2 + mean E_neg^2),
   gradient clipping, an optimizer step and a scheduler step.

The inner loops call the energy network directly (never through the DDP wrapper) and take gradients with
respect to particles only. Everything is in standardised units; ``data_mean`` / ``data_std`` map back.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from typing import Any

import hydra.utils
import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.nn.utils import parametrize

from lvebm_lightning import tracking
from lvebm_lightning.langevin import LangevinConfig, langevin
from lvebm_lightning.posterior import build_posterior, conditional_langevin
from lvebm_lightning.seeding import STREAM_EVAL, STREAM_LATENT, gather_generator_states, make_generator

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """Raised when training produced non-finite values for too many consecutive steps."""


def _langevin_config(cfg: dict[str, Any]) -> LangevinConfig:
    keys = ("step_size", "n_steps", "grad_clip", "metropolis", "final_step_size", "kernel", "compile", "autocast")
    return LangevinConfig(**{k: cfg[k] for k in keys if k in cfg})


class LVEBMModule(pl.LightningModule):
    """A latent-variable EBM p(x, z) = exp(-E(x, z)) / Z trained by particle dynamics.

    All arguments are plain values and dicts (so checkpoints stay ``weights_only``-loadable):

    Args:
        dx, dz: data and latent dimensions.
        n_data: N, the number of training data (one particle set per datum).
        energy: the energy network's config, a Hydra ``_target_`` dict without dx / dz.
        optimizer: a Hydra ``_target_`` dict of a torch optimizer without ``params``.
        lr_schedule: ``{"kind": "cosine" | "constant", "warmup_steps": int, "min_lr_ratio": float}``; cosine
            decays to ``min_lr_ratio * lr`` at ``trainer.max_steps``.
        posterior: ``{"kind", "n_particles", "step_size", "n_steps", ...}`` for the conditional kernel.
        negative: ``{"batch_size", "step_size", "n_steps", ...}`` for the joint kernel on the pool.
        alpha: weight of the energy-magnitude regulariser alpha (E_pos^2 + E_neg^2).
        gradient_clip: clip the parameter gradient norm to this value (None: no clipping).
        divergence: ``{"policy": "skip" | "raise", "max_consecutive": int}``.
        evaluation: ``{"n_steps", "step_size", "n_samples", "metropolis"}``: fresh long chains for the model's
            samples (``step_size`` and ``metropolis`` None: those of the negative kernel).
        seed: the base seed of every rank's generators.
    """

    def __init__(
        self,
        dx: int,
        dz: int,
        n_data: int,
        energy: dict[str, Any],
        optimizer: dict[str, Any],
        lr_schedule: dict[str, Any],
        posterior: dict[str, Any],
        negative: dict[str, Any],
        alpha: float = 0.1,
        gradient_clip: float | None = 1.0,
        divergence: dict[str, Any] | None = None,
        evaluation: dict[str, Any] | None = None,
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
            langevin=_langevin_config(posterior),
            dx=dx, dz=dz, encoder=posterior.pop("encoder", None),
        )
        self.negative_config = _langevin_config(negative)
        self.negative_batch_size = int(negative["batch_size"])
        self.alpha, self.gradient_clip = float(alpha), gradient_clip
        self.divergence = {"policy": "skip", "max_consecutive": 10, **(divergence or {})}
        if self.divergence["policy"] not in ("skip", "raise"):
            raise ValueError(f"divergence.policy must be 'skip' or 'raise', got '{self.divergence['policy']}'.")
        self.evaluation = {"n_steps": 1000, "step_size": None, "n_samples": 2000, **(evaluation or {})}
        self.register_buffer("data_mean", torch.zeros(dx))
        self.register_buffer("data_std", torch.ones(dx))
        self.negative_pool: Any = None  # set by the NegativePool callback
        self.generator: torch.Generator | None = None
        self.bad_steps = 0  # consecutive steps with non-finite values
        self.skipped_steps = 0  # total skipped updates
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
        if self.posterior.store is not None and self.hparams.posterior.get("store_device") == "cpu":
            self.posterior.store.keep_on_host()
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
        schedule = dict(self.hparams.lr_schedule)
        kind = schedule.get("kind", "cosine")
        warmup = int(schedule.get("warmup_steps", 0))
        floor = float(schedule.get("min_lr_ratio", 0.0))
        total = self.trainer.max_steps if self.trainer.max_steps and self.trainer.max_steps > 0 else None
        if kind not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule.kind must be 'cosine' or 'constant', got '{kind}'.")
        if kind == "cosine" and total is None:
            raise ValueError("lr_schedule.kind=cosine needs trainer.max_steps > 0; set it or use kind=constant.")

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if kind == "constant":
                return 1.0
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        config = {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        if self.posterior.trainable:  # a second optimizer, for the posterior's own parameters (an encoder's phi)
            return [config, {"optimizer": self.posterior.configure_optimizer()}]
        return config

    # -- energies ---------------------------------------------------------------------------------------------
    def _sampling(self) -> Any:
        """Compute spectral-normalised weights once per inner loop rather than once per Langevin step."""
        return parametrize.cached() if parametrize.is_parametrized(self.energy) or any(
            parametrize.is_parametrized(m) for m in self.energy.modules()
        ) else nullcontext()

    def joint_energy(self, xz: Tensor) -> Tensor:
        """E of concatenated pairs ``[..., dx + dz]``."""
        return self.energy(xz[..., : self.dx], xz[..., self.dx :])

    # -- training ---------------------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, index = batch
        if batch_idx == 0 and self.posterior.store is not None:
            # Once an epoch: a sampler that does not shard by rank would move another rank's particles silently.
            self.posterior.store.check_owned(index)
        opt, posterior_opt = self._optimizers()
        sched = self.lr_schedulers()
        pool = self.negative_pool

        with self._sampling():
            z = self.posterior.particles(self.energy, x, index, self.generator)
            posterior_loss = self.posterior.loss(self.energy, x, self.generator) if self.posterior.trainable else None
            pool_idx, xz_neg = pool.draw(self.negative_batch_size)
            xz_neg, neg_accept = langevin(self.joint_energy, xz_neg, self.negative_config, pool.generator)
        pool.write(pool_idx, xz_neg)

        xk = x.unsqueeze(1).expand(-1, z.shape[1], -1)
        e_pos = self.energy(xk, z)
        e_neg = self.joint_energy(xz_neg)
        loss = e_pos.mean() - e_neg.mean() + self.alpha * ((e_pos**2).mean() + (e_neg**2).mean())

        # One host synchronisation a step: are particles, energies and loss finite on every rank?
        finite = torch.stack([
            torch.isfinite(z).all(), torch.isfinite(xz_neg).all(),
            torch.isfinite(e_pos).all(), torch.isfinite(e_neg).all(),
        ]).to(torch.float32)
        finite = self._all_ranks_min(finite)
        opt.zero_grad(set_to_none=True)
        if posterior_opt is not None:
            posterior_opt.zero_grad(set_to_none=True)
        if bool(finite.min() < 1):
            names = [n for n, ok in zip(("latent particles", "negative pool", "E_pos", "E_neg"), finite) if ok < 1]
            self._bad_step(names, x, index, pool_idx)
            self._log_step(loss, e_pos, e_neg, z, xz_neg, torch.full((), float("nan"), device=self.device))
            return loss.detach()

        # One backward of both losses: each reaches only its own parameters (theta or phi), and under DDP one
        # backward that touches every parameter is what the gradient reducer expects.
        self.manual_backward(loss if posterior_loss is None else loss + posterior_loss)
        grads = [p.grad for p in self.energy.parameters() if p.grad is not None]
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        # A non-finite encoder gradient drops the whole update too.
        posterior_grad_norm = 0.0 if posterior_loss is None else self._grad_norm(self.posterior.parameters())
        if not bool(torch.isfinite(grad_norm + posterior_grad_norm)):
            opt.zero_grad(set_to_none=True)
            self._bad_step(["parameter gradient"], x, index, pool_idx)
            self._log_step(loss, e_pos, e_neg, z, xz_neg, grad_norm)
            return loss.detach()
        if self.gradient_clip is not None:
            self.clip_gradients(opt, gradient_clip_val=self.gradient_clip, gradient_clip_algorithm="norm")
        opt.step()
        if posterior_opt is not None:
            # Through the strategy (precision plugin, hooks) but not LightningOptimizer.step, which would count a
            # second global step per batch: global_step counts batches (DESIGN.md section 1).
            self.trainer.strategy.optimizer_step(posterior_opt.optimizer, closure=lambda: None)
            self.log("train/posterior_loss", posterior_loss.detach(), on_step=True, on_epoch=False)
        sched.step()
        self.bad_steps = 0

        self._log_step(loss, e_pos, e_neg, z, xz_neg, grad_norm)
        if self.negative_config.metropolis:
            # MALA's acceptance of the pool's moves: near 0 means h_n is too large for the current energy.
            self.log("train/neg_accept", neg_accept, on_step=True, on_epoch=False)
        return loss.detach()

    def _log_step(
        self, loss: Tensor, e_pos: Tensor, e_neg: Tensor, z: Tensor, xz_neg: Tensor, grad_norm: Tensor
    ) -> None:
        """Log the step's energies, scales and norms, non-finite ones included (a skipped step logs its own
        values rather than repeating the previous step's), so a divergence shows before it stops the run."""
        e_pos_mean, e_neg_mean = e_pos.detach().mean(), e_neg.detach().mean()
        self.log_dict(
            {"train/loss": loss.detach(), "train/e_pos": e_pos_mean, "train/e_neg": e_neg_mean},
            prog_bar=True, on_step=True, on_epoch=False,
        )
        self.log_dict(
            {
                "train/gap": e_pos_mean - e_neg_mean,
                "train/grad_norm": grad_norm,
                "train/energy_scale": torch.cat([e_pos.detach().flatten(), e_neg.detach()]).abs().mean(),
                "train/z_norm": z.norm(dim=-1).mean(),
                "train/neg_norm": xz_neg.norm(dim=-1).mean(),
                "train/lr": torch.tensor(self.lr_schedulers().get_last_lr()[0]),
                "train/skipped_steps": float(self.skipped_steps),
            },
            on_step=True, on_epoch=False,
        )

    def _optimizers(self) -> tuple[Any, Any]:
        """The energy's optimizer and the trainable posterior's (None when the posterior has no parameters)."""
        optimizers = self.optimizers()
        if isinstance(optimizers, list):
            return optimizers[0], optimizers[1]
        return optimizers, None

    @staticmethod
    def _grad_norm(parameters: Any) -> Tensor:
        grads = [p.grad for p in parameters if p.grad is not None]
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))

    def _all_ranks_min(self, flags: Tensor) -> Tensor:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flags, op=dist.ReduceOp.MIN)
        return flags

    def _bad_step(self, names: list[str], x: Tensor, index: Tensor, pool_idx: Tensor) -> None:
        """Drop this update; re-initialise non-finite particles; stop after too many in a row."""
        self.bad_steps += 1
        self.skipped_steps += 1
        what = ", ".join(names)
        message = (
            f"Non-finite {what} at step {self.global_step} ({self.bad_steps} bad step(s) in a row). Remedies: a "
            "smaller Langevin step size (sampler.*.step_size) or learning rate (model.lr), a larger "
            "alpha (model.alpha), spectral norm (model.energy.spectral_norm=true) or confinement "
            "(model.energy.gamma)."
        )
        if self.divergence["policy"] == "raise" or self.bad_steps >= int(self.divergence["max_consecutive"]):
            raise TrainingDiverged(message + " Training stopped.")
        rank_zero_warn(message + " Skipped the update.")
        if self.posterior.store is not None:
            stored = self.posterior.store.get(index)
            bad = ~torch.isfinite(stored).all(dim=-1, keepdim=True)
            fresh = torch.randn(stored.shape, generator=self.generator, device=stored.device)
            self.posterior.store.set(index, torch.where(bad, fresh, stored))
        self.negative_pool.reinit_nonfinite_(pool_idx)

    # -- sampling API (standardised units unless said otherwise) -------------------------------------------------
    def to_data_units(self, x_std: Tensor) -> Tensor:
        return x_std * self.data_std + self.data_mean

    def to_standard_units(self, x: Tensor) -> Tensor:
        return (x - self.data_mean) / self.data_std

    def eval_config(
        self, n_steps: int | None = None, step_size: float | None = None, metropolis: bool | None = None
    ) -> LangevinConfig:
        """The evaluation kernel: T_eval steps of h_eval (default h_n), with the negative kernel's Metropolis
        setting unless ``evaluation.metropolis`` says otherwise, so that evaluation samples the law the pool
        was trained against."""
        if metropolis is None:
            metropolis = self.evaluation.get("metropolis")
        return LangevinConfig(
            step_size=step_size or self.evaluation["step_size"] or self.negative_config.step_size,
            n_steps=self.evaluation["n_steps"] if n_steps is None else n_steps,
            metropolis=self.negative_config.metropolis if metropolis is None else bool(metropolis),
            compile=self.negative_config.compile, autocast=self.negative_config.autocast,
        )

    def eval_generator(self, *keys: int) -> torch.Generator:
        """A generator for evaluation draws that never touches the training streams."""
        rank = self.trainer.global_rank if self._trainer is not None else 0
        return make_generator(self.device, self.seed, rank, STREAM_EVAL, *keys)

    @torch.no_grad()
    def sample_joint(
        self, n: int, n_steps: int | None = None, step_size: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Fresh long chains: n pairs ``[n, dx + dz]`` from N(0, I) moved by T_eval joint Langevin steps."""
        generator = generator or self.eval_generator(self.global_step)
        xz = torch.randn(n, self.dx + self.dz, generator=generator, device=self.device)
        with self._sampling():
            xz, _ = langevin(self.joint_energy, xz, self.eval_config(n_steps, step_size), generator)
        return xz

    @torch.no_grad()
    def infer(
        self, x_std: Tensor, n_particles: int, n_steps: int | None = None, step_size: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Posterior particles ``[B, K, dz]`` for data ``[B, dx]`` (standardised) from fresh conditional chains."""
        generator = generator or self.eval_generator(self.global_step, 1)
        z = torch.randn(x_std.shape[0], n_particles, self.dz, generator=generator, device=self.device)
        config = self.eval_config(
            n_steps, step_size or self.posterior.config.step_size, self.posterior.config.metropolis
        )
        with self._sampling():
            return conditional_langevin(self.energy, x_std, z, config, generator)

    def model_samples(self, n: int, n_steps: int | None = None) -> Tensor:
        """This rank's fresh-chain pairs ``[n, dx + dz]`` for the current step, computed once and shared by the
        metric and gallery callbacks."""
        key = (self.global_step, n, n_steps)
        if key not in self._sample_cache:
            self._sample_cache = {key: self.sample_joint(n, n_steps)}
        return self._sample_cache[key]

    # -- validation -------------------------------------------------------------------------------------------
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Metrics are computed over the whole validation set by ``callbacks.metrics``."""

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Metrics are computed over the whole test set by ``callbacks.metrics``."""

    # -- checkpoint -------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        store = self.posterior.store
        state: dict[str, Any] = {"skipped_steps": self.skipped_steps, "bad_steps": self.bad_steps}
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
            self.skipped_steps = int(self._pending_state.get("skipped_steps", 0))
            self.bad_steps = int(self._pending_state.get("bad_steps", 0))

    def _restore_particles(self, state: dict[str, Any], rank: int, world: int) -> None:
        store = self.posterior.store
        if store is not None and "particles" in state:
            store.load_full(state["particles"])
        states = state.get("generator_states", [])
        if len(states) == world:
            self.generator.set_state(states[rank])
        elif states:
            if rank == 0:  # python logging, so that the message lands in the run's train.log
                log.warning(
                    "Checkpoint saved under %d rank(s), resumed under %d: re-sharded the posterior particles by "
                    "datum index and re-seeded the latent generators from (seed, rank, step).", len(states), world,
                )
            self.generator = make_generator(self.device, self.seed, rank, STREAM_LATENT, state["step"])
