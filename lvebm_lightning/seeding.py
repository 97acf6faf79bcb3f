"""Per-rank random streams: every rank draws its own noise, seeded from (seed, rank, stream)."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

# Named streams, so that two particle systems on one rank never share noise.
STREAM_LATENT = 0
STREAM_POOL = 1
STREAM_EVAL = 2


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
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return [state]
    states: list[list[int] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(states, state.tolist())
    return [torch.tensor(s, dtype=torch.uint8) for s in states]
