"""Whether this process is one of several ranks of an initialised process group (docs/design.md section 3)."""

from __future__ import annotations

import torch.distributed as dist


def distributed() -> bool:
    """True when a process group with more than one rank is initialised (collectives then have peers)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
