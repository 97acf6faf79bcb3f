"""``train(cfg)``: what ``python train.py`` does, top to bottom.

Check the config, check the checkpoint to resume from, load and check the data, build the model and check that
it fits the checkpoint; only then create callbacks, loggers and trainer (the first things that write), fit
(resuming from ``ckpt_path``), and test.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra.utils
import lightning.pytorch as pl
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from lvebm_lightning import tracking
from lvebm_lightning.checkpointing import AtomicCheckpointIO, CheckpointGuard, check_compatible, read_checkpoint
from lvebm_lightning.config import ConfigError, expected_world_size, validate
from lvebm_lightning.data.datamodule import LVEBMDataModule
from lvebm_lightning.divergence import TrainingDiverged
from lvebm_lightning.module import LVEBMModule

log = logging.getLogger(__name__)

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_config(output_dir: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """``conf/train.yaml`` with ``overrides``, composed as ``train.py`` composes it, its run directory set to
    ``output_dir``: ``train(compose_config(...))`` without the command line (tests, benchmarks, notebooks)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)  # so that ${hydra:...} values resolve as under @hydra.main
    with open_dict(cfg):
        del cfg.hydra
    return cfg


def build_model(cfg: DictConfig, datamodule: LVEBMDataModule) -> LVEBMModule:
    """The module of ``cfg.model`` for the data's dx and N, with plain-dict hyper-parameters."""
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    cls = hydra.utils.get_class(kwargs.pop("_target_"))
    kwargs.pop("lr", None)  # carried by the optimizer config
    model = cls(dx=datamodule.dim, n_data=datamodule.n_train, seed=int(cfg.seed), **kwargs)
    model.set_standardisation(datamodule.mean, datamodule.std)
    return model


def instantiate_callbacks(cfg: DictConfig | None) -> list[pl.Callback]:
    """Every ``_target_`` entry of the callbacks group, in config order (entries set to null are skipped)."""
    return [hydra.utils.instantiate(c) for c in (cfg or {}).values() if c is not None and "_target_" in c]


def wandb_mode(mode: str) -> str:
    """Resolve ``auto``: W&B's own WANDB_MODE if set, online under a W&B sweep agent (which reports to the
    sweep) or when WANDB_API_KEY is set, else offline."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_SWEEP_ID") or os.environ.get("WANDB_API_KEY") else "offline"


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


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train (and test) the LVEBM of ``cfg``; returns the final metrics."""
    validate(cfg)
    ckpt = read_checkpoint(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    datamodule: LVEBMDataModule = hydra.utils.instantiate(cfg.data).prepare()
    world = expected_world_size(cfg)
    if world is not None and datamodule.n_train < world:
        raise ConfigError(
            f"{datamodule.n_train} training data cannot be sharded over {world} ranks (every rank owns the particles "
            "of its own data); use fewer devices or more data."
        )

    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    model = build_model(cfg, datamodule)
    if ckpt is not None:  # data, architecture, K and pool size, before anything is written
        check_compatible(
            ckpt, cfg.ckpt_path, model=model, pool_size=int(cfg.sampler.negative.pool_size),
            dx=datamodule.dim, dz=int(cfg.model.dz), n_data=datamodule.n_train,
        )
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    guard = CheckpointGuard()
    callbacks = [*instantiate_callbacks(cfg.get("callbacks")), guard]
    loggers = instantiate_loggers(cfg.get("logger"), resume=tracking.resume_state(ckpt) if ckpt else None)
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )
    config = tracking.flatten_config(cfg)
    for logger in loggers:
        logger.log_hyperparams(config)
    with warnings.catch_warnings():
        # Lightning warns that manual-optimization checkpoints hold the post-step state: that is what we save.
        warnings.filterwarnings("ignore", message=".*no pre-optimization state was saved.*")
        # Under DDP the evaluation metrics are computed from samples gathered from every rank and are the same
        # on every rank, so Lightning's advice to reduce them across ranks (sync_dist) does not apply.
        warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")
        try:
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
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.get("test"):
            trainer.test(model, datamodule=datamodule, verbose=False)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    if trainer.is_global_zero:
        _summarise(trainer, metrics, cfg.paths.output_dir)
    for logger in loggers:
        if isinstance(logger, WandbLogger) and trainer.is_global_zero:
            logger.experiment.finish()
    return metrics


def _summarise(trainer: pl.Trainer, metrics: dict[str, float], run_dir: str) -> None:
    """Write the final summary to ``summary.json`` and the W&B summary; log where everything is."""
    summary = tracking.run_summary(trainer, metrics, run_dir)
    tracking.write_summary(summary, run_dir)
    wandb = tracking.wandb_logger(trainer)
    if wandb is not None:
        wandb.experiment.summary.update(summary)
    log.info(tracking.report(summary, trainer))
