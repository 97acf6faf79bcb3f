"""A callback that records what each training step read and left, for ``tests/test_settings.py``'s replay."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from torch import Tensor

N_EVAL = 48
"""Fresh long chains drawn at the end of training."""


def _copy(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in tensors.items()}


class Recorder(pl.Callback):
    """What each training step read and left (class level: ``train`` builds the instance from the config)."""

    steps: list[dict[str, Any]] = []
    start: dict[str, Tensor] = {}
    end: dict[str, Any] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        Recorder.steps, Recorder.end = [], {}
        Recorder.start = {
            "store": pl_module.posterior.store.values.clone(), "pool": pl_module.negative_pool.pool.clone()
        }

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        x, index = batch
        pool, optimizer = pl_module.negative_pool, pl_module.optimizers().optimizer
        moments = [optimizer.state.get(p, {}) for p in pl_module.energy.parameters()]
        Recorder.steps.append({
            "x": x.clone(), "index": index.clone(), "weights": _copy(pl_module.energy.net.state_dict()),
            "moments": [_copy(m) if m else {} for m in moments], "lr": optimizer.param_groups[0]["lr"],
            "z": pl_module.posterior.store.get(index).clone(), "pool": pool.pool.clone(), "order": pool.order.clone(),
            "cursor": pool.cursor, "latent_state": pl_module.generator.get_state(),
            "pool_state": pool.generator.get_state(),
        })

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: Any, optimizer: Any) -> None:
        Recorder.steps[-1]["clipped"] = [p.grad.detach().clone() for p in pl_module.energy.parameters()]

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        Recorder.steps[-1].update(
            z_after=pl_module.posterior.store.get(batch[1]).clone(), pool_after=pl_module.negative_pool.pool.clone(),
            weights_after=_copy(pl_module.energy.net.state_dict()),
        )

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        Recorder.end = {"step": trainer.global_step, "weights": _copy(pl_module.energy.net.state_dict()),
                        "samples": pl_module.sample_joint(N_EVAL).clone()}
