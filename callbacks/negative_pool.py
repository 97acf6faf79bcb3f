"""The persistent joint negative pool: M pairs (x~, z~) that track the model's joint p(x, z).

The pool is split across ranks (rank r holds rows r, r + W, r + 2W, ... of the M rows), each rank drawing its
batches, its re-initialisations and its Langevin noise from its own generator seeded from (seed, rank). The
module asks for a batch (``draw``), moves it with the joint Langevin kernel and writes it back (``write``). A
fraction rho (``reinit_prob``) of every drawn batch is re-initialised from N(0, init_scale^2 I) first, which
keeps the pool from collapsing onto a few modes.

Batches are consecutive slices of one random permutation of the rank's M_r rows, re-drawn only when fewer than B
rows of it are left (the last M_r mod B rows of each permutation are skipped): rows are distinct within a batch,
every row is equally likely, and a step costs O(B), the O(M_r) permutation amortised over floor(M_r / B) steps.

A checkpoint holds the whole pool, every rank's generator state and every rank's permutation and position in it;
loading it under another number of ranks re-splits the pool, re-seeds the generators and starts fresh
permutations (logged).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from torch import Tensor

from lvebm_lightning.distributed import distributed
from lvebm_lightning.particles.store import gather_rows, shard_indices
from lvebm_lightning.seeding import STREAM_POOL, gather_generator_states, make_generator, restore_generator


class NegativePool(pl.Callback):
    """Keeps the persistent joint negative pool of an ``LVEBMModule``.

    Args:
        pool_size: M, the total number of (x, z) pairs over all ranks.
        reinit_prob: rho, the fraction of each drawn batch re-initialised from the init distribution.
        init_scale: the init distribution is N(0, init_scale^2 I) in standardised units.
    """

    def __init__(self, pool_size: int, reinit_prob: float, init_scale: float = 1.0) -> None:
        if pool_size < 1:
            raise ValueError(f"negative pool_size must be >= 1, got {pool_size}.")
        if not 0.0 <= reinit_prob <= 1.0:
            raise ValueError(f"negative reinit_prob (rho) must lie in [0, 1], got {reinit_prob}.")
        self.pool_size, self.reinit_prob, self.init_scale = pool_size, reinit_prob, init_scale
        self.pool: Tensor | None = None  # this rank's rows [M_r, dx + dz]
        self.owned: Tensor | None = None
        self.generator: torch.Generator | None = None
        self.order = torch.empty(0, dtype=torch.long)  # a permutation of this rank's rows; draws walk through it
        self.cursor = 0  # where the next batch starts in ``order``
        self._pending: dict[str, Any] | None = None
        self._trainer: pl.Trainer | None = None

    @property
    def state_key(self) -> str:
        return "NegativePool"

    # -- lifecycle ------------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.negative_pool = self
        self._trainer = trainer

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.materialise(pl_module, trainer.global_rank, trainer.world_size)

    def materialise(self, pl_module: Any, rank: int, world_size: int) -> None:
        """Create this rank's rows (fresh, or from a loaded checkpoint) on the module's device."""
        batch_size = pl_module.negative_batch_size
        if batch_size * world_size > self.pool_size:
            raise ValueError(
                f"The negative pool ({self.pool_size} pairs over {world_size} rank(s)) is smaller than the "
                f"negative batch ({batch_size} per rank); raise sampler.negative.pool_size or lower "
                "sampler.negative.batch_size."
            )
        device, dim = pl_module.device, pl_module.dx + pl_module.dz
        self.owned = shard_indices(self.pool_size, rank, world_size)
        self.generator = make_generator(device, pl_module.seed, rank, STREAM_POOL)
        self.pool = self.init_scale * torch.randn(len(self.owned), dim, generator=self.generator, device=device)
        self.order, self.cursor = torch.empty(0, dtype=torch.long, device=device), 0  # permuted at the first draw
        if self._pending is None:
            return
        full = self._pending["pool"]
        if tuple(full.shape) != (self.pool_size, dim):
            raise ValueError(
                f"The checkpoint's negative pool has shape {tuple(full.shape)} but this run needs "
                f"({self.pool_size}, {dim}) (pool_size, dx + dz); resume with the same data, model.dz and "
                "sampler.negative.pool_size."
            )
        self.pool = full[self.owned].to(device).clone()
        self.generator = restore_generator(
            self.generator, self._pending["generator_states"], pl_module.seed, rank, world_size, STREAM_POOL,
            int(self._pending["step"]), "Negative pool saved under %d rank(s), resumed under %d: re-split the pool, "
            "re-seeded the pool generators from (seed, rank, step) and started fresh draw orders.",
        )
        orders = self._pending.get("orders", [])  # absent from checkpoints written before draws kept an order
        if len(orders) == world_size:
            self.order, self.cursor = orders[rank].to(device).clone(), int(self._pending["cursors"][rank])
        self._pending = None

    # -- what the module calls ------------------------------------------------------------------------------
    def draw(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """Indices ``[B]`` (local rows, without replacement) and pairs ``[B, dx + dz]``, a fraction rho of them
        re-initialised from the init distribution."""
        assert self.pool is not None and self.generator is not None, "NegativePool is not materialised"
        device = self.pool.device
        if self.cursor + batch_size > self.order.shape[0]:
            self.order = torch.randperm(self.pool.shape[0], generator=self.generator, device=device)
            self.cursor = 0
        idx = self.order[self.cursor : self.cursor + batch_size]
        self.cursor += batch_size
        xz = self.pool[idx]
        fresh = self.init_scale * torch.randn(xz.shape, generator=self.generator, device=device)
        reinit = torch.rand(batch_size, 1, generator=self.generator, device=device) < self.reinit_prob
        return idx, torch.where(reinit, fresh, xz)

    def write(self, idx: Tensor, xz: Tensor) -> None:
        """Store the moved pairs ``[B, dx + dz]`` at local rows ``idx``."""
        assert self.pool is not None
        self.pool[idx] = xz.detach()

    def full(self) -> Tensor:
        """The whole pool ``[M, dx + dz]`` gathered from every rank (a collective)."""
        assert self.pool is not None and self.owned is not None
        return gather_rows(self.pool, self.owned, self.pool_size)

    def reinit_nonfinite_(self, idx: Tensor) -> int:
        """Re-initialise local rows ``idx`` that hold non-finite values; returns how many."""
        assert self.pool is not None and self.generator is not None
        rows = self.pool[idx]
        bad = ~torch.isfinite(rows).all(dim=-1)
        fresh = self.init_scale * torch.randn(rows.shape, generator=self.generator, device=rows.device)
        self.pool[idx] = torch.where(bad.unsqueeze(-1), fresh, rows)
        return int(bad.sum())

    # -- checkpoint -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.pool is None:
            return {}
        orders, cursors = gather_draw_orders(self.order, self.cursor)
        return {
            "pool": self.full().cpu(),
            "generator_states": gather_generator_states(self.generator),
            "orders": orders,
            "cursors": cursors,
            "step": self._trainer.global_step,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            self._pending = state_dict


def gather_draw_orders(order: Tensor, cursor: int) -> tuple[list[Tensor], list[int]]:
    """Every rank's draw permutation (local rows ``[M_r]``, empty before the first draw) and position in it, in
    rank order (a collective; one entry each without a process group)."""
    if not distributed():
        return [order.cpu().clone()], [cursor]
    items: list[tuple[list[int], int] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(items, (order.tolist(), cursor))
    return [torch.tensor(o, dtype=torch.long) for o, _ in items], [c for _, c in items]
