"""Checkpoints that a crash cannot corrupt, that are safe to share, and that a run never writes in a bad state.

``AtomicCheckpointIO`` writes every checkpoint to a temporary file in the target folder, flushes it to disk and
renames it over the target (``os.replace`` is atomic on POSIX), so a kill at any moment leaves either the old
or the new ``last.ckpt``, never half of one. ``CheckpointGuard`` (a callback that ``train`` always adds) saves
``last.ckpt`` when the process is asked to stop (SIGTERM, what SLURM and most schedulers send), records the
W&B run id and the resolved config, and refuses to write a checkpoint whose parameters or particles are not
finite, and records which data the run trains on (``data_identity``: the dataset's name, the training split's
size and a SHA-256 fingerprint of its values). ``read_checkpoint`` and ``check_compatible`` check a checkpoint
before a run starts: it exists, it is a Lightning checkpoint that ``torch.load(weights_only=True)`` reads, and it
fits the run (the same data, architecture, K and pool size).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lvebm_lightning.distributed import distributed
from lvebm_lightning.training.upgrade import upgrade

WRITING = threading.Lock()
"""Held while a checkpoint is written: a process that stops on purpose (``training.ranks``) waits for it."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Torch checkpoint IO that writes to a temporary file, fsyncs it and renames it into place.

    A process killed during a write leaves its temporary file ``.<name>.<random>.tmp`` behind; the next write
    into the same folder removes such leftovers (one process writes a run's checkpoints, one at a time).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        with WRITING:
            self._write(checkpoint, Path(path))

    @staticmethod
    def _write(checkpoint: dict[str, Any], path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(".*.ckpt.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
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
        # The rename itself must reach the disk too, or a power cut could bring the old directory entry back.
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, non-finite or does not fit the run."""


def data_identity(datamodule: Any) -> dict[str, Any]:
    """Which data a run trains on: ``{"name", "n_train", "fingerprint"}``, the fingerprint the SHA-256 (first
    16 hex digits) of the training split's float32 values in data units, [N, dx] row-major."""
    train = datamodule.raw["train"].detach().cpu().to(torch.float32).contiguous()
    name = str(datamodule.name) if datamodule.name != "file" else f"file {datamodule.path}"
    digest = hashlib.sha256(train.numpy().tobytes()).hexdigest()[:16]
    return {"name": name, "n_train": int(train.shape[0]), "fingerprint": digest}


def _agree(flag: bool, device: torch.device, every_rank: bool) -> bool:
    """Whether ``flag`` holds on every rank (``every_rank``) or on any rank: a collective under DDP."""
    value = torch.tensor(float(flag), device=device)
    if distributed():
        dist.all_reduce(value, op=dist.ReduceOp.MIN if every_rank else dist.ReduceOp.MAX)
    return bool(value > 0)


class CheckpointGuard(pl.Callback):
    """Keeps checkpoints complete and trustworthy.

    - On SIGTERM it writes ``last.ckpt`` and stops (``SIGTERMException``), so a scheduler's pre-emption loses
      nothing. Its signal handler only sets a flag: Lightning's own handler starts a collective inside the
      handler, which deadlocks DDP when the signal lands while a rank is in another collective. The ranks
      agree on the flag at the end of every training batch (one all-reduce), then every rank raises, takes
      part in the save (the particle store and the pool are gathered from all ranks) and rank 0 writes. A
      SIGTERM during validation is acted on at the next training batch. The ModelCheckpoint must not version
      ``last.ckpt`` (``enable_version_counter: false``, as in ``conf/callbacks/default.yaml``), or the resumed
      run would write ``last-v1.ckpt`` next to this one.
    - It refuses (raises ``CheckpointError``) to write a checkpoint whose energy parameters, latent particles or
      negative pool hold non-finite values, so the last good checkpoint is never replaced by a diverged one.
    """

    def __init__(self) -> None:
        self.sigterm_checkpoint: Path | None = None
        self._sigterm = False
        self._data: dict[str, Any] | None = None

    @staticmethod
    def last_checkpoint_path(trainer: pl.Trainer) -> Path:
        """``<dirpath>/last.ckpt`` of the first ModelCheckpoint, else ``<default_root_dir>/checkpoints``."""
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath:
                return Path(callback.dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
        return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        if getattr(trainer, "datamodule", None) is not None and hasattr(trainer.datamodule, "raw"):
            if self._data is None:
                self._data = data_identity(trainer.datamodule)
            checkpoint["data"] = dict(self._data)
        bad = [name for name, value in checkpoint["state_dict"].items() if value.is_floating_point()
               and not bool(torch.isfinite(value).all())]
        store = getattr(getattr(pl_module, "posterior", None), "store", None)
        if store is not None and not bool(torch.isfinite(store.values).all()):
            bad.append("latent particles")
        pool = checkpoint.get("callbacks", {}).get("NegativePool", {}).get("pool")
        if pool is not None and not bool(torch.isfinite(pool).all()):
            bad.append("negative pool")
        if not _agree(not bad, pl_module.device, every_rank=True):
            raise CheckpointError(
                f"Refused to write a checkpoint at step {trainer.global_step}: non-finite values in "
                f"{', '.join(bad) or 'another rank'}; the last good checkpoint is kept."
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Replaces the handler Lightning registered for this fit (keeping a SIGTERM it caught while restoring);
        # Lightning restores the previous handler at teardown.
        self._sigterm = bool(trainer.received_sigterm)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._sigterm = True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if _agree(self._sigterm, pl_module.device, every_rank=False):
            raise SIGTERMException()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        path = self.last_checkpoint_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)
        self.sigterm_checkpoint = path
        rank_zero_info(f"SIGTERM: saved {path} at step {trainer.global_step}; resume with ckpt_path={path}")


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
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err):
            raise CheckpointError(
                f"{path} holds Python objects that only an unsafe load (weights_only=False) could read; pass a "
                ".ckpt written by train.py."
            ) from None
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or not a torch file); pass a .ckpt "
                              "written by train.py.") from None
    except Exception as err:  # torch raises several types for a file that is not a checkpoint
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(err).__name__}); pass a .ckpt written by train.py."
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(f"{path} is not an lvebm-lightning checkpoint (no state_dict / hyper_parameters).")
    return upgrade(ckpt)


def check_compatible(
    ckpt: dict[str, Any], path: str | Path, model: torch.nn.Module | None = None, pool_size: int | None = None,
    data: dict[str, Any] | None = None, **expected: Any,
) -> None:
    """Raise a one-line ``CheckpointError`` naming every difference between the checkpoint and the run.

    Args:
        ckpt: a checkpoint from ``read_checkpoint``.
        path: where it came from (for the message).
        model: the run's freshly built module: its parameter and buffer shapes must match the checkpoint's.
        pool_size: the run's negative pool size M: it must match the saved pool.
        data: the run's ``data_identity``: name, size and fingerprint must match the checkpoint's (a checkpoint
            written before they were recorded is compared by the dataset name of its config).
        expected: hyper-parameters that must be equal, e.g. ``dx=2, dz=1, n_data=20000``.
    """
    saved = ckpt["hyper_parameters"]
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs run {v!r}" for k, v in expected.items() if saved.get(k) != v]
    if data is not None:
        saved_data = ckpt.get("data")
        if saved_data is None:  # older checkpoints: only the config tells the dataset
            name = ((ckpt.get("config") or {}).get("data") or {}).get("name")
            saved_data = {"name": name} if name and name != "file" else {}
        if saved_data.get("name", data["name"]) != data["name"]:
            diffs.append(f"data: checkpoint {saved_data['name']!r} vs run {data['name']!r}")
        if saved_data.get("n_train") == data["n_train"] and saved_data.get("fingerprint") != data["fingerprint"]:
            diffs.append(
                f"training data fingerprint: checkpoint {saved_data['fingerprint']} vs run {data['fingerprint']} "
                "(same size, other values: another seed, file or dataset parameters)"
            )
    if model is not None:
        run_state, saved_state = model.state_dict(), ckpt["state_dict"]
        for key in sorted(set(run_state) | set(saved_state)):
            if key not in saved_state or key not in run_state:
                where = "run" if key in run_state else "checkpoint"
                diffs.append(f"{key}: only in the {where}")
            elif tuple(run_state[key].shape) != tuple(saved_state[key].shape):
                diffs.append(
                    f"{key}: checkpoint shape {list(saved_state[key].shape)} vs run {list(run_state[key].shape)}"
                )
        saved_particles = ckpt.get("lvebm", {}).get("particles")
        store_k = getattr(getattr(model, "posterior", None), "n_particles", None)
        if saved_particles is not None and store_k is not None and saved_particles.shape[1] != store_k:
            diffs.append(f"particles per datum K: checkpoint {saved_particles.shape[1]} vs run {store_k}")
    saved_pool = ckpt.get("callbacks", {}).get("NegativePool", {}).get("pool")
    if pool_size is not None and saved_pool is not None and saved_pool.shape[0] != pool_size:
        diffs.append(f"sampler.negative.pool_size: checkpoint {saved_pool.shape[0]} vs run {pool_size}")
    if diffs:
        raise CheckpointError(
            f"Checkpoint {path} does not fit this run ({'; '.join(diffs)}); use the data and model config it was "
            "trained with."
        )
