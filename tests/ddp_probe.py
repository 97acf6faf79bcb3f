"""A callback that records, on every rank, what the DDP tests compare across ranks and across runs.

Added to a real ``python train.py`` run through Hydra (``+callbacks.probe._target_=tests.ddp_probe.Probe
+callbacks.probe.out_dir=DIR``); at the end of fit each rank writes ``DIR/rank<r>.pt`` with:

- ``start``: this rank's state once fitting has started (after a checkpoint was restored): the store's local
  particles and the data indices it owns, the local pool rows and their global row ids, both generators' states,
  the energy's parameters;
- ``steps``: for each optimizer step, the epoch, the batch's data indices, the global ids of the data whose
  particles changed and of the pool rows that changed, the particles after the step, the first normals each
  generator would draw at the start of the step, the parameter gradient before the optimizer step and the
  parameters after it; the rank's own (local) gradient, caught by a hook on each parameter as autograd computes
  it, before DDP's reducer averages it, and the averaged gradient right after backward (before clipping); the
  module's count of skipped updates;
- ``end``: the same state as ``start`` when fitting ends;
- ``validation``: the logged ``val/*`` values and the gathered samples the metrics callback kept;
- ``threads``: ``torch.get_num_threads()`` inside fit (after Lightning chose threads per process).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor


def _peek(generator: torch.Generator, n: int = 8) -> Tensor:
    """The next ``n`` standard normals of ``generator`` without advancing it."""
    clone = torch.Generator(device=generator.device)
    clone.set_state(generator.get_state())
    return torch.randn(n, generator=clone, device=generator.device).cpu()


def _params(pl_module: Any) -> Tensor:
    return torch.cat([p.detach().flatten() for p in pl_module.energy.parameters()]).cpu()


class Probe(pl.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.record: dict[str, Any] = {"steps": [], "validation": []}
        self._before: dict[str, Tensor] = {}

    def _state(self, pl_module: Any) -> dict[str, Any]:
        store, pool = pl_module.posterior.store, pl_module.negative_pool
        return {
            "global_step": pl_module.global_step,
            "store": store.values.detach().cpu().clone(),
            "owned": store.owned.clone(),
            "pool": pool.pool.detach().cpu().clone(),
            "pool_owned": pool.owned.clone(),
            "latent_generator": pl_module.generator.get_state().clone(),
            "pool_generator": pool.generator.get_state().clone(),
            "params": _params(pl_module),
        }

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.record.update(rank=trainer.global_rank, world=trainer.world_size, threads=torch.get_num_threads())
        self.record["start"] = self._state(pl_module)
        params = list(pl_module.energy.parameters())
        self._local: list[Tensor | None] = [None] * len(params)
        for i, p in enumerate(params):
            # A tensor hook sees the gradient autograd computed on this rank, before it is accumulated into .grad
            # (where DDP's reducer hooks in to average it); it returns None, so it changes nothing.
            p.register_hook(lambda grad, i=i: self._local.__setitem__(i, grad.detach().cpu().clone()))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._before = {
            "store": pl_module.posterior.store.values.detach().cpu().clone(),
            "pool": pl_module.negative_pool.pool.detach().cpu().clone(),
            "latent_noise": _peek(pl_module.generator),
            "pool_noise": _peek(pl_module.negative_pool.generator),
        }
        self._grad: Tensor | None = None
        self._averaged: Tensor | None = None
        self._local = [None] * len(self._local)

    def on_after_backward(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._averaged = torch.cat([p.grad.detach().flatten() for p in pl_module.energy.parameters()]).cpu()

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: Any, optimizer: Any) -> None:
        self._grad = torch.cat([p.grad.detach().flatten() for p in pl_module.energy.parameters()]).cpu()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        store, pool = pl_module.posterior.store, pl_module.negative_pool
        after_store, after_pool = store.values.detach().cpu(), pool.pool.detach().cpu()
        moved = (after_store != self._before["store"]).flatten(1).any(dim=1)
        moved_pool = (after_pool != self._before["pool"]).any(dim=1)
        local = None if any(g is None for g in self._local) else torch.cat([g.flatten() for g in self._local])
        self.record["steps"].append({
            "global_step": pl_module.global_step,
            "epoch": trainer.current_epoch,
            "index": batch[1].cpu().clone(),
            "moved": store.owned[moved].clone(),
            "particles": store.get(batch[1]).detach().cpu().clone(),
            "moved_pool": pool.owned[moved_pool].clone(),
            "latent_noise": self._before["latent_noise"],
            "pool_noise": self._before["pool_noise"],
            "grad": self._grad,
            "averaged_grad": self._averaged,
            "local_grad": local,
            "skipped_steps": pl_module.guard.skipped_steps,
            "params": _params(pl_module),
        })

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        metrics = next(c for c in trainer.callbacks if type(c).__name__ == "EvaluationMetrics")
        self.record["validation"].append({
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")},
            "data": metrics.latest["data"].clone(),
            "model": metrics.latest["model"].clone(),
            "pool": metrics.latest["pool"].clone(),
        })

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.record["end"] = self._state(pl_module)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(self.record, self.out_dir / f"rank{trainer.global_rank}.pt")
