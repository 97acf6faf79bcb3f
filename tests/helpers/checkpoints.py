"""Read the training state out of a checkpoint and compare two of them bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def training_state(path: Path) -> dict[str, Any]:
    """What must continue exactly: parameters, both particle systems, every generator, optimizer, scheduler,
    the data order and the step."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    pool = ckpt["callbacks"]["NegativePool"]
    return {
        "global_step": ckpt["global_step"],
        "state_dict": ckpt["state_dict"],
        "particles": ckpt["lvebm"]["particles"],
        "latent_generators": ckpt["lvebm"]["generator_states"],
        "skipped_steps": ckpt["lvebm"]["skipped_steps"],
        "pool": pool["pool"],
        "pool_generators": pool["generator_states"],
        "pool_orders": (pool["orders"], pool["cursors"]),
        "optimizer": ckpt["optimizer_states"],
        "scheduler": ckpt["lr_schedulers"],
        "data_order": ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"],
    }


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Where two nested states differ; tensors with ``torch.equal`` (same shape, dtype and every bit)."""
    if isinstance(a, dict):
        if not isinstance(b, dict) or set(a) != set(b):
            return [f"{where}: keys {sorted(set(a) ^ set(b)) if isinstance(b, dict) else type(b).__name__}"]
        return [d for key in a for d in differences(a[key], b[key], f"{where}.{key}")]
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            return [where]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    if isinstance(a, torch.Tensor):
        same = isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        return [] if same else [f"{where} differs"]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def assert_identical(a: Any, b: Any, where: str = "") -> None:
    """Recursive equality; tensors with ``torch.equal`` (same shape, dtype and every bit of every value)."""
    found = differences(a, b, where)
    assert not found, "; ".join(found)
