"""Checkpoints that a crash cannot corrupt and that are safe to share.

``AtomicCheckpointIO`` writes every checkpoint to a temporary file in the target folder, flushes it to disk and
renames it over the target (``os.replace`` is atomic on POSIX), so a kill at any moment leaves either the old
or the new ``last.ckpt``, never half of one. ``read_checkpoint`` checks a checkpoint before a run starts: it
exists, it is a Lightning checkpoint that ``torch.load(weights_only=True)`` reads, and it fits the run.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Torch checkpoint IO that writes to a temporary file, fsyncs it and renames it into place."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the run."""


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """Load a Lightning checkpoint with ``weights_only=True``, or raise a one-line ``CheckpointError`` (that tells
    to pass ``key=...``, the argument that names the checkpoint)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"Checkpoint not found: {path}; pass {key}=<run dir>/checkpoints/last.ckpt.")
    if path.is_dir():
        raise CheckpointError(f"Checkpoint path {path} is a folder; pass the .ckpt file inside it (e.g. last.ckpt).")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a file that is not a checkpoint
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(err).__name__}); pass a .ckpt written by train.py."
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(f"{path} is not an lvebm-lightning checkpoint (no state_dict / hyper_parameters).")
    return ckpt


def check_compatible(ckpt: dict[str, Any], path: str | Path, **expected: Any) -> None:
    """Raise if the checkpoint's dx, dz or n_data (or any given hyper-parameter) differ from the run's."""
    saved = ckpt["hyper_parameters"]
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs run {v!r}" for k, v in expected.items() if saved.get(k) != v]
    if diffs:
        raise CheckpointError(
            f"Checkpoint {path} does not fit this run ({'; '.join(diffs)}); use the data and model config it was "
            "trained with."
        )
