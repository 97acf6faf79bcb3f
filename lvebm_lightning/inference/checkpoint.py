"""A checkpoint of ``train.py`` loaded for inference, and the data it is asked about (``lvebm_lightning.inference``).

``load`` reads the checkpoint with ``torch.load(weights_only=True)`` and rebuilds the module, its step, the run's
config, the negative pool and the persistent posterior particles; ``load_data`` reads points ``[B, dx]`` in
data units from a file, an array or a split name (``val``, ``test``) and checks them against the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra.utils
import numpy as np
import torch
from torch import Tensor

from lvebm_lightning.data.files import load_array
from lvebm_lightning.errors import is_positive_number
from lvebm_lightning.inference.options import CHECKS, SPLITS, STARTS, missing_data
from lvebm_lightning.particles.starts import ChainStarts, neighbour_starts, prior_starts
from lvebm_lightning.seeding import STREAM_DRAWS, make_generator
from lvebm_lightning.training.checkpointing import read_checkpoint
from lvebm_lightning.training.module import LVEBMModule


class InferenceError(ValueError):
    """A request that cannot be served (wrong dimension, missing pool, bad count); one line with the fix."""


@dataclass
class LoadedModel:
    """A checkpoint ready for inference: the module (eval mode), its step, training config and negative pool."""

    module: LVEBMModule
    path: Path
    step: int
    config: dict[str, Any] | None
    pool: Tensor | None  # [M, dx + dz], standardised units
    particles: Tensor | None = None  # [N, K, dz] persistent posterior particles of the training data
    _run_data: Any = None

    def run_data(self) -> Any:
        """The run's own data module (splits in data units under ``.raw``), rebuilt from the checkpoint's config."""
        if not self.config or "data" not in self.config:
            raise InferenceError(
                f"{self.path} holds no training config, so the run's data cannot be rebuilt; pass data=<file>."
            )
        if self._run_data is None:
            self._run_data = hydra.utils.instantiate(self.config["data"]).prepare()
        return self._run_data

    @property
    def dx(self) -> int:
        return self.module.dx

    @property
    def dz(self) -> int:
        return self.module.dz

    def generator(self, seed: int | None, *keys: int) -> torch.Generator:
        """The evaluation stream of rank 0 at the checkpoint's step (the validation callback's), or of ``seed``."""
        base = self.module.seed if seed is None else seed
        return make_generator(self.module.device, base, 0, STREAM_DRAWS, self.step, *keys)

    def chain_starts(
        self, start: str, x_std: Tensor, missing: Tensor, n: int, generator: torch.Generator, skip: int = 0
    ) -> ChainStarts:
        """Starting points of n chains per datum (``particles.starts``) from what this checkpoint holds.

        ``start="neighbours"``: the training data nearest to the standardised ``x_std`` ``[B, dx]`` in its observed
        coordinates (``missing`` ``[B, dx]`` True where unobserved), the run's training split rebuilt from the
        config: x_m from them, z from their persistent particles, else from the amortised encoder, else N(0, I).
        ``start="prior"``: N(0, I). ``skip``: a second set after the first ``skip`` neighbours' particles.
        """
        if start not in STARTS:
            raise InferenceError(f"start must be one of {', '.join(STARTS)}, got {start!r}.")
        if start == "prior":
            return prior_starts(x_std, missing, self.dz, n, generator)
        if not self.config or "data" not in self.config:
            raise InferenceError(
                f"{self.path} holds no training config, so its training data (where start=neighbours begins the "
                "chains) cannot be rebuilt; use start=prior."
            )
        train = self.module.to_standard_units(self.run_data().raw["train"].to(x_std.device))
        store = self.particles if self.dz > 0 else None
        if store is not None and store.shape[0] != train.shape[0]:
            raise InferenceError(
                f"{self.path} holds particles of {store.shape[0]} training data but its config rebuilds "
                f"{train.shape[0]}; the data behind the run changed, so use start=prior."
            )
        available = train.shape[0] * (1 if store is None else store.shape[1])
        if skip + n > available:
            what = "particles in the store" if store is not None else "training data"
            raise InferenceError(
                f"{skip + n} chains per datum start at {skip + n} of the {available} {what}; ask for at most "
                f"{available - skip} chains per datum or use start=prior."
            )
        encoder = self.module.posterior if getattr(self.module.posterior, "trainable", False) else None
        return neighbour_starts(x_std, missing, n, train, store, encoder, self.dz, generator, skip)

    def start_sets(
        self, start: str, check: str, x_std: Tensor, missing: Tensor, n: int, generator: torch.Generator
    ) -> ChainStarts:
        """n chains per datum from ``start`` and, unless ``check="none"``, n more from ``check`` (after the first
        set's neighbours when both are ``neighbours``, so that the sets start apart): ``[B, n or 2n, ...]``."""
        if check not in CHECKS:
            raise InferenceError(f"check must be one of {', '.join(CHECKS)}, got {check!r}.")
        if check != "none" and n < 2:
            raise InferenceError(
                f"check={check} compares two sets of {n} chain(s) per datum, and a set needs 2 to have a spread; "
                "ask for at least 2 chains per datum or use check=none."
            )
        first = self.chain_starts(start, x_std, missing, n, generator)
        if check == "none":
            return first
        second = self.chain_starts(check, x_std, missing, n, generator, skip=n if check == start else 0)
        return ChainStarts(torch.cat([first.x, second.x], 1), torch.cat([first.z, second.z], 1))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InferenceError(f"device={device} was asked for but no CUDA device is available; use device=cpu.")
    return torch.device(device)


def load(ckpt: str | Path | LoadedModel, device: str | torch.device = "cpu") -> LoadedModel:
    """Read a checkpoint of ``train.py`` (``torch.load(weights_only=True)``) into a ``LoadedModel``."""
    if isinstance(ckpt, LoadedModel):
        return ckpt
    state = read_checkpoint(ckpt, key="ckpt")
    module = LVEBMModule(**state["hyper_parameters"])
    module.load_state_dict(state["state_dict"])
    module.to(resolve_device(device) if isinstance(device, str) else device).eval()
    pool_state = state.get("callbacks", {}).get("NegativePool") or {}
    pool = pool_state.get("pool")
    return LoadedModel(
        module=module,
        path=Path(ckpt).expanduser(),
        step=int(state.get("global_step", 0)),
        config=state.get("config"),
        pool=pool.to(module.device) if pool is not None else None,
        particles=(state.get("lvebm") or {}).get("particles"),
    )


def load_data(model: LoadedModel, data: str | Path | np.ndarray | Tensor, name: str = "data") -> Tensor:
    """Data ``[B, dx]`` in data units from a file, an array or a split name, checked against the model's dx."""
    if isinstance(data, str) and data in SPLITS:
        return model.run_data().raw[data]
    if isinstance(data, (str, Path)) and not Path(data).expanduser().exists():
        raise InferenceError(missing_data(str(data)))
    if isinstance(data, (str, Path)):
        x = torch.from_numpy(load_array(Path(data).expanduser()))
        source = str(data)
    else:
        x = torch.as_tensor(np.asarray(data) if not isinstance(data, Tensor) else data, dtype=torch.float32)
        source = f"the {name} array"
        if x.ndim != 2 or x.shape[0] == 0:
            raise InferenceError(f"{source} must be 2-D [B, dx] with B >= 1, got shape {tuple(x.shape)}.")
    if x.shape[1] != model.dx:
        raise InferenceError(
            f"{source} has {x.shape[1]} columns but the model was trained on dx={model.dx}; pass data with "
            f"{model.dx} columns (one datum per row)."
        )
    if not bool(torch.isfinite(x).all()):
        raise InferenceError(f"{source} holds non-finite values; drop or fill those rows.")
    return x.to(torch.float32)


def check_positive(**values: Any) -> None:
    for key, value in values.items():
        if value is not None and not is_positive_number(value):
            raise InferenceError(f"{key} must be a positive number, got {value!r}.")
