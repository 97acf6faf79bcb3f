"""One progress bar over the optimizer steps of a step-counted run (``trainer.max_steps`` set).

Lightning's bar counts the batches of each epoch and starts again at every epoch, so a run counted in steps
(epochs of N / B batches, many of them) shows one bar per epoch, and a log file gets four redraws an epoch. This
bar runs once over the global steps 0..max_steps (from the resumed step on a resume). On a terminal it is
redrawn every step; written to a file (``redraws`` given) it is drawn at the start, about ``redraws`` times over
the run and at the end, and the validation and test bars are left out, so a log holds about ``redraws`` + 2 bar
lines however many epochs and validations the run has. Without ``max_steps`` (a run counted in epochs) it is
Lightning's bar.
"""

from __future__ import annotations

import sys
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from omegaconf import DictConfig

EPOCH_RUN_STEPS = 1000
"""Steps assumed for the refresh rate of a run counted in epochs, whose length in steps is not known ahead."""


class StepProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, counting global steps in one bar when ``trainer.max_steps`` > 0.

    Args:
        redraws: None on a terminal (redraw every step); for a log file, about how many times to draw the
            training bar over the run (every ceil(max_steps / redraws) steps), with no validation or test bars.
    """

    def __init__(self, redraws: int | None = None) -> None:
        if redraws is not None and redraws < 1:
            raise ValueError(f"redraws must be None (a terminal) or >= 1, got {redraws}.")
        super().__init__(refresh_rate=1)
        self.redraws = redraws

    def _steps(self) -> int:
        """max_steps of a step-counted run, else 0."""
        max_steps = self.trainer.max_steps
        return max_steps if max_steps and max_steps > 0 else 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.redraws is not None:
            self._refresh_rate = max(1, -(-(self._steps() or EPOCH_RUN_STEPS) // self.redraws))
        super().on_train_start(trainer, pl_module)

    def init_train_tqdm(self) -> Tqdm:
        total = self._steps()
        if not total:
            return super().init_train_tqdm()
        step = self.trainer.global_step
        return Tqdm(
            desc=self.train_description, total=total, initial=step, position=2 * self.process_position,
            disable=self.is_disabled, leave=True, dynamic_ncols=True, file=sys.stdout, smoothing=0,
            bar_format=self.BAR_FORMAT,
        )

    def init_validation_tqdm(self) -> Tqdm:
        return super().init_validation_tqdm() if self.redraws is None else Tqdm(disable=True)

    def init_test_tqdm(self) -> Tqdm:
        return super().init_test_tqdm() if self.redraws is None else Tqdm(disable=True)

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if not self._steps():  # the steps bar goes on across epochs
            super().on_train_epoch_start(trainer, *args)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        total = self._steps()
        if not total:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        elif not self.train_progress_bar.disable and self._should_update(trainer.global_step, total):
            self.train_progress_bar.n = trainer.global_step
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))  # redraws the bar

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._steps():  # an epoch's end is no moment to redraw the steps bar
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.redraws is None:
            super().on_validation_end(trainer, pl_module)
        else:  # in a file the validation's numbers join the bar at its next redraw, not in a line of their own
            self.val_progress_bar.close()
            self.reset_dataloader_idx_tracker()


def progress_bar(cfg: DictConfig) -> list[pl.Callback]:
    """One bar over the run's steps; without a terminal (a log file, a batch job) a bar that redraws every step
    fills the log, so it is redrawn about 20 times a run instead."""
    if cfg.trainer.get("enable_progress_bar") is False:
        return []
    return [StepProgressBar(redraws=None if sys.stdout.isatty() else 20)]
