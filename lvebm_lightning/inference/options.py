"""The choices the inference functions take, and their messages: no torch, so that the command line checks them
before it imports anything heavy."""

from __future__ import annotations

SPLITS = ("val", "test")
"""The run's own held-out splits, accepted wherever data are asked for."""

STARTS = ("neighbours", "prior")
"""Where conditional chains start: the training data nearest in the observed coordinates (their missing
coordinates and stored particles), or N(0, I)."""

INFER_START = "neighbours"
"""``lvebm-infer``'s default start (measured: benchmarks/chain_starts.py)."""

CHECKS = (*STARTS, "none")
"""Where the second set of chains, whose agreement with the first is checked, starts (``none``: no check)."""


def missing_data(data: str) -> str:
    """The message for ``data=<data>`` that is neither a split name nor an existing file."""
    return (f"data={data} is neither a split of the run ({', '.join(SPLITS)}) nor an existing file; pass data=val, "
            "data=test or a .npy / .npz / .csv file of points [N, dx].")
