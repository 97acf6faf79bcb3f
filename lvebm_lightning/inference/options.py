"""The choices the inference functions take, and their messages: no torch, so that the command line checks them
before it imports anything heavy."""

from __future__ import annotations

SPLITS = ("val", "test")
"""The run's own held-out splits, accepted wherever data are asked for."""

STARTS = ("neighbours", "prior")
"""Where conditional chains start: the training data nearest in the observed coordinates (their missing
coordinates and stored particles), or N(0, I)."""

INFER_START = "neighbours"
"""``lvebm-infer``'s default start. Measured (``benchmarks/chain_starts.py``, results/chain_starts/): on a decoder
model of 1000 pendulum trajectories, 16 chains of 500 steps per datum from the store's neighbours reached a particle
ELBO 90 +- 7 nats per held-out datum above that of chains from N(0, I), higher on 92% of the data."""

CHECKS = (*STARTS, "none")
"""Where the second set of chains, whose agreement with the first is checked, starts (``none``: no check)."""


def missing_data(data: str) -> str:
    """The message for ``data=<data>`` that is neither a split name nor an existing file."""
    return (f"data={data} is neither a split of the run ({', '.join(SPLITS)}) nor an existing file; pass data=val, "
            "data=test or a .npy / .npz / .csv file of points [N, dx].")
