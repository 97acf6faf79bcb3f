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
        "optimizer": ckpt["optimizer_states"],
        "scheduler": ckpt["lr_schedulers"],
        "data_order": ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"],
    }


def assert_identical(a: Any, b: Any, where: str = "") -> None:
    """Recursive equality; tensors with ``torch.equal`` (same shape, dtype and every bit of every value)."""
    if isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {sorted(set(a) ^ set(b))}"
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        same = a.dtype == b.dtype and torch.equal(a, b)
        assert same, f"{where} differs"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
