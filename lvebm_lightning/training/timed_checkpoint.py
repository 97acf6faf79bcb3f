"""Checkpoints by wall-clock time, so that a lost run costs at most a bounded time of work however slow its steps.

``conf/callbacks/default.yaml`` offers both intervals as two Lightning ``ModelCheckpoint`` callbacks writing the
same ``last.ckpt`` (one ``ModelCheckpoint`` takes a step interval or a time interval, not both):
``model_checkpoint`` every ``every_n_train_steps`` optimizer steps, and ``timed_checkpoint`` (this class) whenever
``train_time_interval`` has passed since it last wrote. Whichever comes first bounds the work lost.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint


class TimedCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint(train_time_interval=...)``, which also fires when the module optimizes manually.

    Lightning (2.6) checks only ``every_n_train_steps`` after a batch of a manually optimized module such as
    ``LVEBMModule``, so a time interval alone never saves during training. This applies the rule Lightning applies
    under automatic optimization: after a training
    batch, save when at least ``train_time_interval`` has passed since this callback last saved (or since
    training started), as rank 0's clock says, so every rank saves at the same step. Under DDP the decision costs
    one all-reduce of one number per step.

    Args:
        train_time_interval: the interval (>= 0); 0 saves after every batch.
        **kwargs: the other ``ModelCheckpoint`` arguments (not ``every_n_train_steps`` or ``every_n_epochs``).
    """

    def __init__(self, train_time_interval: timedelta, **kwargs: Any) -> None:
        if not isinstance(train_time_interval, timedelta) or train_time_interval.total_seconds() < 0:
            raise ValueError(
                f"train_time_interval must be a time interval >= 0, got {train_time_interval!r}; set e.g. "
                "callbacks.timed_checkpoint.train_time_interval.minutes=10."
            )
        super().__init__(train_time_interval=train_time_interval, **kwargs)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if pl_module.automatic_optimization:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        if self._should_skip_saving_checkpoint(trainer):
            return
        assert self._train_time_interval is not None and self._last_time_checked is not None
        elapsed = time.monotonic() - self._last_time_checked
        due = trainer.is_global_zero and elapsed >= self._train_time_interval.total_seconds()
        if not trainer.strategy.reduce_boolean_decision(due, all=False):
            return
        self._last_time_checked = time.monotonic()
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)
