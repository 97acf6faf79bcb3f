"""A callback that stops training with an error at a given step, as a job killed mid-run would stop."""

from __future__ import annotations

import lightning.pytorch as pl


class CrashAtStep(pl.Callback):
    """Raise ``RuntimeError("simulated crash ...")`` at the end of optimizer step ``step`` (after the callbacks
    listed before it, e.g. the checkpoint callbacks, have run for that step), on rank ``rank`` only if given."""

    def __init__(self, step: int, rank: int | None = None) -> None:
        self.step, self.rank = step, rank

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step >= self.step and self.rank in (None, trainer.global_rank):
            raise RuntimeError(f"simulated crash at step {trainer.global_step}")
