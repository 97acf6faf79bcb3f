"""The LVEBM data module: a dataset split into train / validation / test, standardised, yielding (x, index).

Datasets are the generators of ``lvebm_lightning.data.systems`` (fixed seed, documented formulas) or a user's
file (``name=file``, ``path=...``). Everything is loaded and checked by ``prepare()``, which ``train.py`` calls
before any trainer or run directory is touched, so a bad file fails at once with a one-line message.
The model is trained on standardised data x_std = (x - mean) / std with mean and std of the training split;
metrics convert back to the data's own units.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lvebm_lightning.data.files import DataFileError, load_array
from lvebm_lightning.data.options import check_options
from lvebm_lightning.data.shards import ResumableLoader, ShardedBatchSampler
from lvebm_lightning.data.systems import get_dataset

_GENERATED: OrderedDict[tuple[Any, int, int], tuple[np.ndarray, np.ndarray | None]] = OrderedDict()
_GENERATED_KEEP = 8  # data sets remembered per process
_GENERATED_MAX_BYTES = 32 * 2**20  # larger ones are not kept: a run would hold a second copy to no purpose


def _generated(system: Any, n: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``system.sample_with_latents(n, seed)``, remembered per process. A system is a frozen dataclass of its
    parameters, so equal parameters share an entry. Generation is deterministic in (system, n, seed) and some of it
    is slow (phi^4's HMC, the pendulum's RK4), while one process may build the same data module many times
    (``benchmarks/paper.py`` trains every method on each dataset; the test suite trains many short runs).
    Copies are returned, so no caller can change what a later one gets."""
    key = (system, n, seed)
    if key in _GENERATED:
        _GENERATED.move_to_end(key)
        x, latents = _GENERATED[key]
        return x.copy(), None if latents is None else latents.copy()
    x, latents = system.sample_with_latents(n, seed=seed)
    if x.nbytes + (0 if latents is None else latents.nbytes) <= _GENERATED_MAX_BYTES:
        _GENERATED[key] = (x.copy(), None if latents is None else latents.copy())
        while len(_GENERATED) > _GENERATED_KEEP:
            _GENERATED.popitem(last=False)
    return x, latents


class IndexedTensor(Dataset):
    """Rows of a tensor addressed by lists of indices: ``ds[[i, j, ...]] = (x[[i, j, ...]], index)``."""

    def __init__(self, x: Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: list[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(index, dtype=torch.long)
        return self.x[idx], idx


class LVEBMDataModule(pl.LightningDataModule):
    """Train / validation / test splits of one dataset.

    Args:
        name: a dataset of ``lvebm_lightning.data.systems.DATASETS``, or ``file``.
        path: the user's ``.npy`` / ``.npz`` / ``.csv`` file (N rows, dx columns) when ``name=file``.
        n_train, n_val, n_test: split sizes for generated datasets.
        val_fraction, test_fraction: split fractions for a file (the rest is training data).
        batch_size: data per step per rank.
        eval_batch_size: data per validation / test batch.
        seed: seed of the generator and of the split.
        standardise: train on (x - mean) / std of the training split.
        options: parameters of the generated dataset that differ from its documented defaults (``data/systems.py``),
            for example ``{kappa: 0.2}`` for the disordered phi^4 phase.
    """

    def __init__(
        self,
        name: str = "double_well",
        path: str | None = None,
        n_train: int = 20000,
        n_val: int = 2000,
        n_test: int = 2000,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        batch_size: int = 256,
        eval_batch_size: int = 4096,
        seed: int = 0,
        standardise: bool = True,
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}.")
        self.name, self.path = name, path
        self.sizes = (n_train, n_val, n_test)
        self.fractions = (val_fraction, test_fraction)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed, self.standardise = seed, standardise
        self.options = dict(options or {})
        self.system: Any = None
        self.splits: dict[str, Tensor] = {}
        self.latents: dict[str, Tensor] = {}  # the hidden truth per split, for evaluation only (never trained on)
        self.mean: Tensor | None = None
        self.std: Tensor | None = None

    # -- loading ----------------------------------------------------------------------------------------------
    def prepare(self) -> LVEBMDataModule:
        """Load or generate the data, check it, split and standardise it (idempotent)."""
        if self.splits:
            return self
        if self.name == "file":
            if self.options:
                raise ValueError(
                    f"data.options ({', '.join(self.options)}) set the parameters of a generated dataset; data=file "
                    "takes none: drop them."
                )
            raw = self._load_file()
        else:
            self.system = get_dataset(self.name, **self.options)
            check_options(self.system, self.options)
            raw = None
        if raw is None:
            n_train, n_val, n_test = self.sizes
            if min(self.sizes) < 1:
                raise ValueError(f"data.n_train, n_val and n_test must be >= 1, got {self.sizes}.")
            x, latents = _generated(self.system, n_train + n_val + n_test, self.seed)
            parts = np.split(x, [n_train, n_train + n_val])
            if latents is not None:
                cuts = np.split(latents, [n_train, n_train + n_val])
                self.latents = {k: torch.from_numpy(v) for k, v in zip(("train", "val", "test"), cuts)}
        else:
            parts = self._split_file(raw)
        self.raw = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in zip(("train", "val", "test"), parts)}
        train = self.raw["train"]
        self.mean = train.mean(0) if self.standardise else torch.zeros(train.shape[1])
        std = train.std(0) if self.standardise else torch.ones(train.shape[1])
        self.std = torch.where(std > 0, std, torch.ones_like(std))
        self.splits = {k: (v - self.mean) / self.std for k, v in self.raw.items()}
        return self

    def _load_file(self) -> np.ndarray:
        if not self.path:
            raise ValueError("data=file needs data.path=<file.npy|.npz|.csv>; none was given.")
        return load_array(Path(self.path).expanduser())

    def _split_file(self, x: np.ndarray) -> list[np.ndarray]:
        val_fraction, test_fraction = self.fractions
        n = x.shape[0]
        n_val, n_test = int(round(n * val_fraction)), int(round(n * test_fraction))
        if n - n_val - n_test < 2 or n_val < 1 or n_test < 1:
            raise DataFileError(
                f"{self.path}: {n} rows cannot be split into train / val / test with data.val_fraction="
                f"{val_fraction} and data.test_fraction={test_fraction}; supply more rows or change the fractions."
            )
        order = np.random.default_rng(self.seed).permutation(n)
        x = x[order]
        return [x[n_val + n_test :], x[:n_val], x[n_val : n_val + n_test]]

    @property
    def dim(self) -> int:
        return int(self.prepare().splits["train"].shape[1])

    @property
    def n_train(self) -> int:
        return int(self.prepare().splits["train"].shape[0])

    # -- Lightning hooks ---------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _progress(self) -> int:
        """Training batches consumed so far in the run (saved in checkpoints and restored on resume)."""
        return self.trainer.fit_loop.epoch_loop.batch_progress.total.processed

    def train_dataloader(self) -> ResumableLoader:
        rank, world = self._rank()
        x = self.splits["train"]
        sampler = ShardedBatchSampler(
            len(x), self.batch_size, rank, world, shuffle=True, seed=self.seed, drop_last=True,
            progress=self._progress if self.trainer is not None else None,
        )
        return ResumableLoader(IndexedTensor(x), sampler=sampler, batch_size=None)

    def _eval_loader(self, split: str) -> DataLoader:
        rank, world = self._rank()
        x = self.splits[split]
        sampler = ShardedBatchSampler(len(x), self.eval_batch_size, rank, world, shuffle=False, drop_last=False)
        return DataLoader(IndexedTensor(x), sampler=sampler, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
