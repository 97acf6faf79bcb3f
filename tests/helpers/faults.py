"""Callbacks that break a training run on purpose, and one that records what a resumed run restored.

Tests add them through the config (``+callbacks.fault._target_=tests.helpers.faults.PoisonLatents``), so the
real ``train(cfg)`` and ``python train.py`` paths are exercised.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from lvebm_lightning.langevin import LangevinConfig


class PoisonLatents(pl.Callback):
    """Before training batch number ``batch`` (counted over the whole run), set the latent particles of that
    batch's data to NaN: one non-finite conditional system, which the module must detect. ``record`` (class
    level) holds the parameters before and after that batch and the batch's particles after it."""

    record: dict[str, Any] = {}

    def __init__(self, batch: int, rank: int | None = None) -> None:
        self.batch, self.rank = batch, rank  # rank: poison on that rank only (None: on every rank)

    def _poisoned(self, trainer: pl.Trainer) -> bool:
        on_rank = self.rank is None or trainer.global_rank == self.rank
        return on_rank and trainer.fit_loop.epoch_loop.total_batch_idx == self.batch

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self._poisoned(trainer):
            _, index = batch
            store = pl_module.posterior.store
            store.set(index, torch.full_like(store.get(index), float("nan")))
            PoisonLatents.record = {
                "step": trainer.global_step, "before": [p.detach().clone() for p in pl_module.parameters()]
            }

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._poisoned(trainer):
            PoisonLatents.record.update(
                step_after=trainer.global_step,
                after=[p.detach().clone() for p in pl_module.parameters()],
                particles_after=pl_module.posterior.store.get(batch[1]).clone(),
            )


class SpikeEnergy(pl.Callback):
    """During training batch number ``batch`` only, add 3e38 to the energy's output bias: every energy stays
    finite (just below the float32 maximum 3.4e38) and the particles are unaffected (a constant has no
    gradient in x or z), but d(alpha E^2)/dE = 2 alpha E overflows, so the parameter gradient is non-finite."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.saved: torch.Tensor | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.fit_loop.epoch_loop.total_batch_idx == self.batch:
            bias = pl_module.energy.net[-1].bias
            self.saved = bias.detach().clone()
            with torch.no_grad():
                bias.add_(3.0e38)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        if self.saved is not None:
            with torch.no_grad():
                pl_module.energy.net[-1].bias.copy_(self.saved)
            self.saved = None


class CorruptParameters(pl.Callback):
    """Right after optimizer step ``step`` (before ModelCheckpoint saves it), set one weight to NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.energy.parameters())[0, 0] = float("nan")


class BlowUpNegativeChains(pl.Callback):
    """From optimizer step ``step`` on, run the joint (negative) kernel with step size ``step_size``: with a
    confining energy E >= (gamma / 2)|xz|^2 and h gamma > 2 each Langevin step multiplies |xz| by about
    h gamma - 1, so the pool overflows to inf / NaN within a few steps, a genuine divergence of the chains.
    ``checkpoint_bytes`` (class level) holds last.ckpt as it was when the divergence began."""

    checkpoint_bytes: bytes = b""

    def __init__(self, step: int, step_size: float = 1.0e3, n_steps: int = 20) -> None:
        self.step, self.config = step, LangevinConfig(step_size=step_size, n_steps=n_steps, kernel="ula")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step >= self.step and pl_module.negative_config is not self.config:
            pl_module.negative_config = self.config
            with open(f"{trainer.checkpoint_callback.dirpath}/last.ckpt", "rb") as f:
                BlowUpNegativeChains.checkpoint_bytes = f.read()


class RestoreProbe(pl.Callback):
    """Copies what a run holds when training starts (after a resume restored it): parameters, the whole
    particle store, the whole pool and both generators' states. Class-level, so a test can read it after
    ``train(cfg)`` built its own instance from the config."""

    seen: dict[str, Any] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        RestoreProbe.seen = {
            "global_step": trainer.global_step,
            "state_dict": {k: v.detach().clone() for k, v in pl_module.state_dict().items()},
            "particles": pl_module.posterior.store.full().clone(),
            "pool": pl_module.negative_pool.full().clone(),
            "latent_generator": pl_module.generator.get_state(),
            "pool_generator": pl_module.negative_pool.generator.get_state(),
        }


class StopAt(pl.Callback):
    """Stop training after optimizer step ``step``: by ``trainer.should_stop`` (a clean stop; ModelCheckpoint
    still saves that step) or, with ``sigterm=True``, by sending this process SIGTERM, as a scheduler would."""

    def __init__(self, step: int, sigterm: bool = False, rank: int | None = None) -> None:
        self.step, self.sigterm, self.rank = step, sigterm, rank  # rank: only that rank is signalled (None: all)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step < self.step or trainer.received_sigterm:
            return
        if self.sigterm:
            if self.rank is not None and trainer.global_rank != self.rank:
                return
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            trainer.should_stop = True


class SavedSteps(pl.Callback):
    """At the start of each batch, the step of last.ckpt as the previous batches left it (None: not written)."""

    seen: list[int | None] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        SavedSteps.seen = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        last = Path(trainer.checkpoint_callback.dirpath) / "last.ckpt"
        SavedSteps.seen.append(torch.load(last, weights_only=True)["global_step"] if last.is_file() else None)
