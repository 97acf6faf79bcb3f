"""Per-rank random streams: every rank draws its own noise, seeded from (seed, rank, stream)."""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.distributed as dist

from lvebm_lightning.distributed import distributed

log = logging.getLogger(__name__)

# Named streams, so that two particle systems on one rank never share noise.
STREAM_LATENT = 0
STREAM_POOL = 1
STREAM_DRAWS = 2  # model samples, posterior inference and metrics: never the training streams


def derive_seed(*keys: int) -> int:
    """A 63-bit seed mixed from integer keys with NumPy's SeedSequence (independent streams per key)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


def make_generator(device: torch.device | str, *keys: int) -> torch.Generator:
    """A torch.Generator on ``device`` seeded from ``keys`` (e.g. seed, rank, stream)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(*keys))
    return generator


def gather_generator_states(generator: torch.Generator) -> list[torch.Tensor]:
    """Every rank's generator state, in rank order (a collective; one entry without a process group)."""
    state = generator.get_state()
    if not distributed():
        return [state]
    states: list[list[int] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(states, state.tolist())
    return [torch.tensor(s, dtype=torch.uint8) for s in states]


def restore_generator(
    generator: torch.Generator, states: list[torch.Tensor], seed: int, rank: int, world_size: int, stream: int,
    step: int, message: str,
) -> torch.Generator:
    """This rank's ``generator`` of ``stream`` continued from a checkpoint's per-rank ``states``.

    Saved under ``world_size`` ranks: this rank's saved state is set. Saved under another number: a fresh stream
    seeded from (seed, rank, stream, step) is returned, and ``message`` (with %d placeholders for the saved and the
    current number of ranks) logged once, on rank 0. Nothing saved: ``generator`` as it is.
    """
    if len(states) == world_size:
        generator.set_state(states[rank])
    elif states:
        if rank == 0:  # python logging, so that the message lands in the run's train.log
            log.warning(message, len(states), world_size)
        generator = make_generator(generator.device, seed, rank, stream, step)
    return generator
