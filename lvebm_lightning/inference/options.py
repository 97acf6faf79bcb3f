"""The choices the inference functions take, and their messages: no torch, so that the command line checks them
before it imports anything heavy."""

from __future__ import annotations

SPLITS = ("val", "test")
"""The run's own held-out splits, accepted wherever data are asked for."""

STARTS = ("prior", "neighbours")
"""Where conditional chains start: N(0, I), or the persistent particles of the nearest training data."""


def missing_data(data: str) -> str:
    """The message for ``data=<data>`` that is neither a split name nor an existing file."""
    return (f"data={data} is neither a split of the run ({', '.join(SPLITS)}) nor an existing file; pass data=val, "
            "data=test or a .npy / .npz / .csv file of points [N, dx].")
