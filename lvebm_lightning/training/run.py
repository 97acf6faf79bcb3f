"""``train(cfg)``: what ``python train.py`` does, top to bottom, in two parts.

``prepare(cfg)`` writes nothing: it checks the config, reads the checkpoint to resume from, loads and checks the
data, builds the model, the callbacks and a trial trainer (so that every constructor's complaint, and
Lightning's ``MisconfigurationException``, becomes a one-line ``ConfigError`` naming the config node), and
checks that the checkpoint fits the run (data identity, architecture, K, pool size) and is not already
finished. ``run(cfg, prepared)`` then creates the loggers and the trainer (the first things that write), fits
(resuming from ``ckpt_path``), tests, and reports. ``train.py`` prepares before Hydra creates the run directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra.utils
import lightning.pytorch as pl
from hydra.errors import InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from lvebm_lightning.config import schema
from lvebm_lightning.config.validation import ConfigError, expected_world_size, validate
from lvebm_lightning.data.datamodule import LVEBMDataModule
from lvebm_lightning.data.files import DataFileError
from lvebm_lightning.training import quiet, ranks, tracking
from lvebm_lightning.training.checkpointing import (
    AtomicCheckpointIO,
    CheckpointError,
    CheckpointGuard,
    check_compatible,
    data_identity,
    read_checkpoint,
)
from lvebm_lightning.training.divergence import TrainingDiverged
from lvebm_lightning.training.module import LVEBMModule
from lvebm_lightning.training.progress import progress_bar

log = logging.getLogger(__name__)


def build_model(cfg: DictConfig, datamodule: LVEBMDataModule) -> LVEBMModule:
    """The module of ``cfg.model`` for the data's dx and N, with plain-dict hyper-parameters."""
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    cls = hydra.utils.get_class(kwargs.pop("_target_"))
    kwargs.pop("lr", None)  # carried by the optimizer config
    model = cls(dx=datamodule.dim, n_data=datamodule.n_train, seed=int(cfg.seed), **kwargs)
    model.set_standardisation(datamodule.mean, datamodule.std)
    return model


def wandb_mode(mode: str) -> str:
    """Resolve ``auto``: W&B's own WANDB_MODE if set, online under a W&B sweep agent (which reports to the
    sweep) or when WANDB_API_KEY is set, else offline."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_SWEEP_ID") or os.environ.get("WANDB_API_KEY") else "offline"


def instantiate_callbacks(cfg: DictConfig | None) -> list[pl.Callback]:
    """Every ``_target_`` entry of the callbacks group, in config order (entries set to null are skipped)."""
    callbacks = []
    for name, entry in (cfg or {}).items():
        if entry is not None and "_target_" in entry:
            with config_node(f"callbacks.{name}"):
                callbacks.append(hydra.utils.instantiate(entry))
    return callbacks


def instantiate_loggers(cfg: DictConfig | None, resume: dict[str, Any] | None = None) -> list[Logger]:
    """The loggers of the logger group; a W&B logger continues the run of a checkpoint's
    ``tracking.resume_state`` (``resume``), skipping the steps that run already logged."""
    loggers: list[Logger] = []
    resume = dict(resume or {})
    for name, entry in (cfg or {}).items():
        if entry is None or "_target_" not in entry:
            continue
        if name == "wandb":
            overrides: dict[str, Any] = {"mode": wandb_mode(entry.get("mode", "auto"))}
            if resume.get("id") and not entry.get("id"):
                overrides.update(id=resume["id"], resume="allow")
                if issubclass(hydra.utils.get_class(entry._target_), tracking.LVEBMWandbLogger):
                    overrides.update({k: v for k, v in resume.items() if k.startswith("logged_steps")})
            Path(entry.save_dir).mkdir(parents=True, exist_ok=True)
            loggers.append(hydra.utils.instantiate(entry, **overrides))
        else:
            loggers.append(hydra.utils.instantiate(entry))
    return loggers


class RunFinished(Exception):
    """The checkpoint to resume from has already reached ``trainer.max_steps``: nothing to do."""


@dataclass
class Prepared:
    """What ``prepare`` built and checked: nothing of it has written anything yet."""

    ckpt: dict[str, Any] | None
    datamodule: LVEBMDataModule
    model: LVEBMModule
    callbacks: list[pl.Callback]


@contextlib.contextmanager
def config_node(name: str) -> Iterator[None]:
    """Turn a constructor's complaint about the values under config node ``name`` into a one-line ConfigError."""
    try:
        yield
    except (ConfigError, CheckpointError, DataFileError):
        raise
    except (ValueError, TypeError, MisconfigurationException, InstantiationException) as err:
        cause = err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ is not None else err
        if not isinstance(cause, (ValueError, TypeError, MisconfigurationException, InstantiationException)):
            raise
        text = " ".join(str(cause).split()) or type(cause).__name__
        raise ConfigError(f"{name}: {text} (fix the values under {name}; python train.py --cfg job shows them)") \
            from None


def prepare(cfg: DictConfig) -> Prepared:
    """Check and build everything that ``run`` needs, writing nothing; raises ConfigError / CheckpointError /
    DataFileError (one line) or RunFinished."""
    schema.check_targets(cfg)
    validate(cfg)
    ckpt = read_checkpoint(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    with config_node("data"):
        datamodule: LVEBMDataModule = hydra.utils.instantiate(cfg.data).prepare()
    world = expected_world_size(cfg)
    if world is not None and datamodule.n_train < world:
        raise ConfigError(
            f"{datamodule.n_train} training data cannot be sharded over {world} ranks (every rank owns the particles "
            "of its own data); use fewer devices or more data."
        )
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    with config_node("model"):
        model = build_model(cfg, datamodule)
    if ckpt is not None:  # data, architecture, K and pool size, before anything is written
        check_compatible(
            ckpt, cfg.ckpt_path, model=model, pool_size=int(cfg.sampler.negative.pool_size),
            dx=datamodule.dim, dz=int(cfg.model.dz), n_data=datamodule.n_train, data=data_identity(datamodule),
        )
        step, max_steps = int(ckpt.get("global_step", 0)), int(cfg.trainer.get("max_steps") or -1)
        if 0 < max_steps <= step:
            raise RunFinished(
                f"{cfg.ckpt_path} is already at step {step} of trainer.max_steps={max_steps}: nothing to train; "
                f"to train on, raise trainer.max_steps (e.g. trainer.max_steps={2 * step})."
            )
    # RankWatch before CheckpointGuard: a stop the ranks agree on disarms the watch before the guard saves.
    callbacks = [
        *instantiate_callbacks(cfg.get("callbacks")), *progress_bar(cfg), ranks.RankWatch(), CheckpointGuard()
    ]
    for callback in callbacks:  # settings that only the data can judge (a reconstruction mask against dx)
        if hasattr(callback, "check_data"):
            callback.check_data(datamodule)
    with config_node("trainer"), quiet.lightning():  # a trial trainer: devices, strategy, precision, ...
        hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=False, plugins=[AtomicCheckpointIO()])
    return Prepared(ckpt, datamodule, model, callbacks)


def train(cfg: DictConfig, prepared: Prepared | None = None) -> dict[str, Any]:
    """Train (and test) the LVEBM of ``cfg``; returns the final metrics ({} when the checkpoint to resume from
    is already finished, which is logged in one line)."""
    if prepared is None:
        try:
            prepared = prepare(cfg)
        except RunFinished as done:
            log.info(str(done))
            return {}
    return run(cfg, prepared)


def run(cfg: DictConfig, prepared: Prepared) -> dict[str, Any]:
    """Fit (resuming from ``cfg.ckpt_path``), test, summarise: the part of ``train`` that writes."""
    with quiet.lightning(), warnings.catch_warnings():
        quiet.known_warnings()
        return _run(cfg, prepared)


def _run(cfg: DictConfig, prepared: Prepared) -> dict[str, Any]:
    ckpt, datamodule, model, callbacks = prepared.ckpt, prepared.datamodule, prepared.model, prepared.callbacks
    guard = next(c for c in callbacks if isinstance(c, CheckpointGuard))
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    loggers = instantiate_loggers(cfg.get("logger"), resume=tracking.resume_state(ckpt) if ckpt else None)
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )
    config = tracking.flatten_config(cfg)
    for logger in loggers:
        logger.log_hyperparams(config)
    if ckpt is not None:
        log.info(f"Resuming {cfg.ckpt_path} at step {int(ckpt.get('global_step', 0))}")
    try:
        with ranks.losses_reported(trainer):  # a rank lost under DDP: one line, exit 3 (training.ranks)
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    except TrainingDiverged as err:
        last = guard.last_checkpoint_path(trainer)
        kept = f"The last good checkpoint is kept: {last}." if last.is_file() else "No checkpoint was written yet."
        raise TrainingDiverged(f"{err} {kept}") from None
    except SIGTERMException:
        raise SIGTERMException(
            f"stopped by SIGTERM at step {trainer.global_step}; saved {guard.sigterm_checkpoint}, resume with "
            f"ckpt_path={guard.sigterm_checkpoint}"
        ) from None
    except MisconfigurationException as err:
        raise ConfigError(" ".join(str(err).split())) from None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.get("test"):
        with ranks.losses_reported(trainer):
            trainer.test(model, datamodule=datamodule, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    ranks.disarm()  # the last collective is behind: a peer that exits now has finished, not been lost
    if trainer.is_global_zero:
        _summarise(trainer, metrics, cfg.paths.output_dir)
    return metrics


def _summarise(trainer: pl.Trainer, metrics: dict[str, float], run_dir: str) -> None:
    """Write the final summary to ``summary.json`` and the W&B summary, close the W&B run (its own report
    silenced), then log where everything is: the last lines of the console."""
    summary = tracking.run_summary(trainer, metrics, run_dir)
    tracking.write_summary(summary, run_dir)
    text = tracking.report(summary, trainer)
    wandb = tracking.wandb_logger(trainer)
    if wandb is not None:
        wandb.experiment.summary.update(summary)
        wandb.experiment.finish()
    log.info(text)
