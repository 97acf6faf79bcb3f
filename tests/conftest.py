"""Shared fixtures: the real Hydra config, composed as train.py composes it, shrunk to run in seconds on CPU."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from lvebm_lightning.config.compose import compose_config as compose_train

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# A default run needs no account and no network; tests never go online.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def compose_config(output_dir: Path, overrides: list[str] | None = None) -> DictConfig:
    """``conf/train.yaml`` with ``debug=fast`` and ``overrides``, its run directory set to ``output_dir``."""
    return compose_train(output_dir, ["debug=fast", "trainer.accelerator=cpu", *(overrides or [])])


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Build a fast config in a fresh run directory: ``make_cfg("seed=1", run="a")``."""

    def make(*overrides: str, run: str = "run") -> DictConfig:
        return compose_config(tmp_path / run, list(overrides))

    return make


@pytest.fixture
def one_thread():
    """Small nets and particle clouds gain nothing from threads, and on a shared 2-core machine two threads wait
    on each other (a 32-unit net trained 30x slower, measured): tests that opt in run on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
