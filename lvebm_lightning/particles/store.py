"""Persistent particles keyed by datum index, sharded across ranks.

The store holds K latent particles z_i^k for every training datum i: a tensor ``[N, K, dz]`` in all. Under
DDP each rank owns a fixed shard of the data indices (``shard_indices``) and holds only the particles of its
own shard, so particles never cross ranks during training. A checkpoint holds the whole ``[N, K, dz]`` store,
gathered from every rank; loading it under another number of ranks re-shards it.

Indexing is O(B) per batch: ``get`` gathers and ``set`` scatters the batch's rows only, never the whole store.
``keep_on_host()`` (``sampler.posterior.store_device=cpu``) keeps the store in host memory (pinned when CUDA is
present) for N K dz too large for the device: ``get`` gathers the batch's rows on the host and copies them to
the device without blocking (the batch's indices are read on the host); ``set`` starts a non-blocking copy
back and applies it on the host at the next access, so the copy overlaps the rest of the training step. The
values are the same as on the device.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from lvebm_lightning.distributed import distributed


def shard_indices(n: int, rank: int, world_size: int) -> Tensor:
    """The data indices owned by ``rank``: i with i mod world_size == rank, ascending ``[n_r]``."""
    return torch.arange(rank, n, world_size, dtype=torch.long)


def gather_rows(local: Tensor, owned: Tensor, n: int) -> Tensor:
    """Assemble the full ``[n, ...]`` tensor from every rank's ``local`` rows, ``local[j]`` being row ``owned[j]``.

    A collective: every rank must call it. Without a process group it scatters ``local`` into a fresh tensor.
    Rows that no rank owns stay NaN, so a gap can never pass as data.
    """
    full = torch.full((n, *local.shape[1:]), float("nan"), dtype=local.dtype, device=local.device)
    if not distributed():
        full[owned.to(local.device)] = local
        return full
    world = dist.get_world_size()
    sizes = [torch.zeros((), dtype=torch.long, device=local.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor(local.shape[0], device=local.device))
    width = int(max(int(s) for s in sizes))
    pad_local = torch.zeros((width, *local.shape[1:]), dtype=local.dtype, device=local.device)
    pad_local[: local.shape[0]] = local
    pad_owned = torch.full((width,), -1, dtype=torch.long, device=local.device)
    pad_owned[: owned.shape[0]] = owned.to(local.device)
    all_local = [torch.empty_like(pad_local) for _ in range(world)]
    all_owned = [torch.empty_like(pad_owned) for _ in range(world)]
    dist.all_gather(all_local, pad_local)
    dist.all_gather(all_owned, pad_owned)
    for rows, idx, size in zip(all_local, all_owned, sizes):
        full[idx[: int(size)]] = rows[: int(size)]
    return full


class ParticleStore:
    """K persistent particles in R^d for each of N data, of which this rank owns a shard.

    Args:
        n_data: N, the number of training data.
        n_particles: K >= 1, particles per datum.
        dim: d, the dimension of one particle.
        rank, world_size: this process's place; the rank owns ``shard_indices(N, rank, world_size)``.
    """

    def __init__(self, n_data: int, n_particles: int, dim: int, rank: int = 0, world_size: int = 1) -> None:
        if n_particles < 1:
            raise ValueError(f"n_particles (K) must be >= 1, got {n_particles}.")
        self.n_data, self.n_particles, self.dim = n_data, n_particles, dim
        self.rank, self.world_size = rank, world_size
        self.owned = shard_indices(n_data, rank, world_size)
        self.values = torch.zeros(len(self.owned), n_particles, dim)
        self.compute_device: torch.device | None = None  # set by keep_on_host: where get() delivers
        self._pending: tuple[Tensor, Tensor, torch.cuda.Event | None] | None = None

    @property
    def device(self) -> torch.device:
        return self.values.device

    def to(self, device: torch.device | str) -> ParticleStore:
        self.values = self.values.to(device)
        return self

    def keep_on_host(self) -> None:
        """Move the store to host memory (pinned when CUDA is available); ``get`` still delivers on the device
        the store was on."""
        self._flush()
        self.compute_device = self.values.device
        values = self.values.cpu()
        self.values = values.pin_memory() if torch.cuda.is_available() else values

    def _flush(self) -> None:
        """Apply the last ``set`` of a host store once its device-to-host copy has landed."""
        if self._pending is not None:
            local, rows, done = self._pending
            if done is not None:
                done.synchronize()
            self.values[local] = rows
            self._pending = None

    def init_(self, generator: torch.Generator | None = None, scale: float = 1.0) -> None:
        """Draw every owned particle from the init distribution N(0, scale^2 I)."""
        self.values = scale * torch.randn(
            self.values.shape, generator=generator, device=self.device, dtype=self.values.dtype
        )

    def _local(self, index: Tensor) -> Tensor:
        # Ownership is i mod world_size == rank, so the local position is i // world_size.
        return torch.div(index.to(self.device), self.world_size, rounding_mode="floor")

    def check_owned(self, index: Tensor) -> None:
        """Raise if any datum index is not owned by this rank (a sampler that does not shard by rank)."""
        foreign = (index % self.world_size) != self.rank
        if bool(foreign.any()):
            raise RuntimeError(
                f"Rank {self.rank} was given data indices it does not own (e.g. {int(index[foreign][0])}); "
                "the training sampler must shard indices by rank (use the LVEBM data module's sampler)."
            )

    def get(self, index: Tensor) -> Tensor:
        """The particles ``[B, K, d]`` of data ``index`` ``[B]`` (global indices owned by this rank)."""
        if self.compute_device is None:
            return self.values[self._local(index)]
        self._flush()
        rows = self.values[self._local(index)]
        if rows.device != self.compute_device and torch.cuda.is_available():
            rows = rows.pin_memory()
        return rows.to(self.compute_device, non_blocking=True)

    def set(self, index: Tensor, particles: Tensor) -> None:
        """Write back the particles ``[B, K, d]`` of data ``index`` ``[B]``."""
        if self.compute_device is None:
            self.values[self._local(index)] = particles.detach().to(self.values.dtype)
            return
        self._flush()
        rows = particles.detach().to(self.values.device, self.values.dtype, non_blocking=True)
        if not particles.is_cuda:
            self.values[self._local(index)] = rows
            return
        done = torch.cuda.Event()
        done.record()
        self._pending = (self._local(index), rows, done)

    def reinit_nonfinite_(self, index: Tensor, generator: torch.Generator | None) -> None:
        """Redraw from N(0, I) the particles of data ``index`` ``[B]`` that hold a non-finite value."""
        stored = self.get(index)
        bad = ~torch.isfinite(stored).all(dim=-1, keepdim=True)
        fresh = torch.randn(stored.shape, generator=generator, device=stored.device)
        self.set(index, torch.where(bad, fresh, stored))

    def full(self) -> Tensor:
        """The whole store ``[N, K, d]`` gathered from every rank (a collective)."""
        self._flush()
        # A host store is gathered on the host, unless the process group's backend needs device tensors.
        on_device = self.compute_device is not None and distributed() and dist.get_backend() == "nccl"
        return gather_rows(self.values.to(self.compute_device) if on_device else self.values, self.owned, self.n_data)

    def load_full(self, full: Tensor) -> None:
        """Take this rank's shard of a whole store ``[N, K, d]`` (saved under any number of ranks)."""
        expected = (self.n_data, self.n_particles, self.dim)
        if tuple(full.shape) != expected:
            raise ValueError(
                f"The checkpoint's particle store has shape {tuple(full.shape)} but this run needs {expected} "
                "(N data, K particles, dz); resume with the same data and model.n_particles / model.dz."
            )
        self._flush()
        values = full[self.owned].to(self.device, self.values.dtype).clone()
        self.values = values.pin_memory() if self.compute_device is not None and torch.cuda.is_available() else values
