"""Callbacks that record what the amortised-posterior tests check (``tests/test_posterior.py``).

``OptimizerRecorder`` (in-process runs) appends itself to ``RECORDS`` at the end of fit, holding the encoder's
weights at the start of fit (after any restore) and the trainer's optimizers. ``EncoderProbe`` is added to a
real ``python train.py`` run through Hydra (``+callbacks.probe._target_=tests.helpers.encoder_probe.EncoderProbe
+callbacks.probe.out_dir=DIR``); at the end of fit each rank writes ``DIR/rank<r>.pt`` with the energy's and the
encoder's parameters at the start and at the end of fit, and the global step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch


def _flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()]).cpu()


class EncoderProbe(pl.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.record: dict[str, Any] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.record.update(energy_start=_flat(pl_module.energy), encoder_start=_flat(pl_module.posterior))

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.record.update(
            rank=trainer.global_rank, global_step=trainer.global_step,
            energy_end=_flat(pl_module.energy), encoder_end=_flat(pl_module.posterior),
        )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(self.record, self.out_dir / f"rank{trainer.global_rank}.pt")


RECORDS: list[OptimizerRecorder] = []


class OptimizerRecorder(pl.Callback):
    """Keeps the encoder's weights at the start of fit (after any restore) and the optimizers at the end."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.start = {k: v.detach().clone() for k, v in pl_module.posterior.state_dict().items()}
        self.start_step = trainer.global_step
        self.encoder_params = {id(p) for p in pl_module.posterior.parameters()}

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.optimizers = trainer.optimizers
        RECORDS.append(self)
