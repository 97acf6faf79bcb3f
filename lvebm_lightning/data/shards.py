"""Index samplers that keep every datum on one rank and can resume mid-epoch.

Rank r owns the data indices i with i mod W = r (W ranks). The training sampler yields batches of rank r's
indices, shuffled within the shard each epoch by a permutation seeded from (seed, rank, epoch), so a datum's
persistent particles never leave its rank. Every batch has the same size (the last partial batch is dropped),
which keeps shapes fixed for the inner loops.

Resuming: with L batches an epoch, the training order is a function of one number, the count c of training
batches consumed so far in the run (epoch c // L, batch c mod L). The trainer's batch count is saved in every
checkpoint and restored on resume, so each new iterator starts exactly where consumption stopped: after a
stop mid-epoch, at an epoch's end, or after Lightning prefetched a batch that was never trained on. Lightning's
epoch counter is not used: after a restart at an epoch's end it lags by one, which would replay an epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from lvebm_lightning.particles.store import shard_indices
from lvebm_lightning.seeding import derive_seed


class ShardedBatchSampler(Sampler[list[int]]):
    """Batches of this rank's data indices.

    Args:
        n: the number of data.
        batch_size: B per rank (capped at the shard size, so an epoch has at least one batch).
        rank, world_size: this process's place.
        shuffle: reshuffle the shard each epoch (training) or keep index order (evaluation).
        seed: base seed of the permutations.
        drop_last: drop a final partial batch (training) or keep it (evaluation).
        progress: for resumable training, a callable giving c, the number of training batches consumed so far
            in the whole run (restored by a resume); each iterator then yields epoch c // L from batch c mod L.
            Without it, the epoch comes from ``set_epoch`` and every iterator yields a whole epoch.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
        progress: Callable[[], int] | None = None,
    ) -> None:
        self.indices = shard_indices(n, rank, world_size)
        if len(self.indices) == 0:
            raise ValueError(f"Rank {rank} of {world_size} owns no data (n={n}); use fewer devices or more data.")
        # Every rank runs the same number of batches (DDP needs it): count on the smallest shard, n // W.
        self.shard_size = n // world_size if drop_last else len(self.indices)
        if self.shard_size == 0:
            raise ValueError(f"{n} data cannot be split over {world_size} ranks; use fewer devices or more data.")
        self.batch_size = min(batch_size, self.shard_size) if drop_last else batch_size
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.progress = progress
        self.epoch = 0
        self._offset = 0  # batches to add to the trainer's count after a resume on another number of ranks

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = self.shard_size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def position(self) -> tuple[int, int]:
        """(epoch, first batch) of the next iterator."""
        if self.progress is None:
            return self.epoch, 0
        epoch, start = divmod(self._consumed(), len(self))
        return epoch, start

    def _consumed(self) -> int:
        return int(self.progress()) + self._offset if self.progress is not None else 0

    def __iter__(self) -> Iterator[list[int]]:
        # A generator: the position is read at the first ``next``, when the trainer's count is restored.
        epoch, start = self.position()
        order = self.indices
        if self.shuffle:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, self.rank, epoch))
            order = order[torch.randperm(len(order), generator=generator)]
        for b in range(start, len(self)):
            yield order[b * self.batch_size : (b + 1) * self.batch_size].tolist()

    def state_dict(self) -> dict[str, Any]:
        """Where the order stands (the next batch to train on) and the batch count it comes from. A resume
        re-derives the position from the trainer's restored batch count, so this is mostly a record."""
        epoch, start = self.position()
        return {
            "epoch": epoch, "batches_done": start, "consumed": self._consumed(), "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Adjust only for a change in the number of ranks: c batches of B under W' ranks used c W' B data, the
        same share of the data as c W' / W batches under W ranks, so the epoch continues after that share."""
        saved_world = int(state.get("world_size", self.world_size))
        if saved_world != self.world_size and "consumed" in state:
            consumed = int(state["consumed"])
            self._offset = consumed * saved_world // self.world_size - consumed


class ResumableLoader(DataLoader):
    """A DataLoader whose position in the data order is recorded in Lightning checkpoints (via its batch sampler;
    a resume re-derives the position from the trainer's restored batch count)."""

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
