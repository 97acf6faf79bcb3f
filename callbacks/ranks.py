"""Reductions over the ranks of a run, by torchmetrics' aggregation metrics (each rank calls them; a single
process gets its own values back)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.aggregation import CatMetric, MeanMetric


def per_rank(n: int, world_size: int) -> int:
    """This rank's share ceil(n / world_size) (at least 1) of n items drawn over all ranks."""
    return max(1, -(-n // world_size))


def gather_rows(rows: Tensor, device: torch.device) -> Tensor:
    """Rows ``[n, d]`` of every rank, concatenated in rank order ``[sum n, d]``, in the rows' dtype."""
    cat = CatMetric(nan_strategy="disable").set_dtype(rows.dtype).to(device)
    cat.update(rows)
    return cat.compute()


def rank_mean(device: torch.device, value: Tensor | None = None) -> MeanMetric:
    """A float64 mean over the values of every rank (NaN kept, so that a broken value shows), of ``value`` ``[n]``
    if given; ``update`` adds more, ``compute`` reduces."""
    mean = MeanMetric(nan_strategy="disable").set_dtype(torch.float64).to(device)
    if value is not None:
        mean.update(value)
    return mean
