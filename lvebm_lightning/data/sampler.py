"""Index samplers that keep every datum on one rank and can resume mid-epoch.

Rank r owns the data indices i with i mod W = r (W ranks). The training sampler yields batches of rank r's
indices, shuffled within the shard each epoch by a permutation seeded from (seed, rank, epoch), so a datum's
persistent particles never leave its rank. Every batch has the same size (the last partial batch is dropped),
which keeps shapes fixed for the inner loops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from lvebm_lightning.particles import shard_indices
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
        progress: for resumable training, a callable giving the number of batches of the current epoch the
            trainer has consumed; ``state_dict`` records it so that a resumed run continues with the next batch.
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
        progress: Callable[[], tuple[int, int]] | None = None,
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
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._skip = 0
        self.epoch = epoch

    def __len__(self) -> int:
        n = self.shard_size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.indices
        if self.shuffle:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, self.rank, self.epoch))
            order = order[torch.randperm(len(order), generator=generator)]
        skip, self._skip = self._skip, 0
        for b in range(skip, len(self)):
            yield order[b * self.batch_size : (b + 1) * self.batch_size].tolist()

    def state_dict(self) -> dict[str, Any]:
        epoch, done = self.progress() if self.progress is not None else (self.epoch, 0)
        return {"epoch": int(epoch), "batches_done": int(done), "rank": self.rank, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        epoch, done = int(state["epoch"]), int(state["batches_done"])
        # Saved under W' ranks, done batches of every rank consumed done * W' batches' worth of data; under W ranks
        # the epoch continues after the same share of the data (the new shards are shuffled afresh anyway).
        done = done * int(state.get("world_size", self.world_size)) // self.world_size
        if done >= len(self):
            epoch, done = epoch + 1, 0
        self.epoch, self._skip = epoch, done


class ResumableLoader(DataLoader):
    """A DataLoader whose position in the epoch is saved in Lightning checkpoints (via its batch sampler)."""

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
