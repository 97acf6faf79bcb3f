"""Train a latent-variable EBM: ``python train.py [hydra overrides]`` (see README.md and conf/train.yaml).

Exit status: 0 done (or the checkpoint to resume from had already reached ``trainer.max_steps``: one line says
so); 1 training diverged (the last good checkpoint is kept); 2 bad input (config, data file or checkpoint),
reported in one line before anything is written; 3 another rank of a DDP run was lost (killed, crashed or
silent): one line names it, the last good checkpoint and the command that resumes (``training.ranks``); 143
stopped by SIGTERM after saving last.ckpt.

A plain run (no ``--flags``, no multirun) is composed, checked and prepared (data read, model, callbacks and a
trial trainer built: ``lvebm_lightning.training.run.prepare``) before Hydra creates the run directory, and torch and
Lightning are imported only once the command line is known to be well-formed.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from lvebm_lightning.config.compose import ConfigError, check_overrides, normalise_overrides
from lvebm_lightning.errors import exit_with_error

CONFIG_DIR = Path(__file__).resolve().parent / "conf"
PREPARED: Any = None
"""What ``prepare`` built before Hydra started (a plain run), handed to ``main``."""


def strategy_name(strategy: Any) -> str:
    """``trainer.strategy`` as a user reads it: a name (``ddp``) stays, an instantiated strategy
    (``_target_: ...WatchedDDPStrategy``) reads ``ddp`` when its class is a DDP strategy, else its class name."""
    if isinstance(strategy, (DictConfig, dict)) and "_target_" in strategy:
        cls = str(strategy["_target_"]).rsplit(".", 1)[-1]
        return "ddp" if "ddp" in cls.lower() else cls
    return str(strategy)


def check_multirun(cfg: DictConfig) -> None:
    """Hydra multirun runs its jobs one after another in this process, which Lightning's DDP launcher (it
    re-runs the command line for each rank) cannot follow: refuse the combination before anything starts."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    devices, strategy = cfg.trainer.get("devices", 1), strategy_name(cfg.trainer.get("strategy", "auto"))
    several = not (isinstance(devices, int) and devices == 1) or "ddp" in strategy.lower()
    if several or int(cfg.trainer.get("num_nodes", 1) or 1) > 1:
        raise ConfigError(
            f"Hydra multirun (-m) cannot launch DDP (trainer.devices={devices}, trainer.strategy={strategy}); "
            "set trainer.devices=1, or sweep multi-device runs with W&B (conf/sweep/, README 'Sweeps')."
        )


def prepare_or_exit(cfg: DictConfig) -> Any:
    """``training.prepare``, with a bad input reported in one line (exit 2) and a finished run in one (exit 0)."""
    from lvebm_lightning.data.files import DataFileError
    from lvebm_lightning.training.checkpointing import CheckpointError
    from lvebm_lightning.training.run import RunFinished, prepare

    try:
        return prepare(cfg)
    except (ConfigError, CheckpointError, DataFileError) as err:
        exit_with_error("lvebm", "error", err, 2)
    except RunFinished as done:
        print(f"lvebm: {done}")
        sys.exit(0)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from lvebm_lightning.training.divergence import TrainingDiverged
    from lvebm_lightning.training.run import run

    try:
        check_multirun(cfg)
    except ConfigError as err:
        exit_with_error("lvebm", "error", err, 2)
    prepared = PREPARED if PREPARED is not None else prepare_or_exit(cfg)
    try:
        metrics = run(cfg, prepared)
    except ConfigError as err:
        exit_with_error("lvebm", "error", err, 2)
    except TrainingDiverged as err:
        exit_with_error("lvebm", "training diverged", err, 1)
    except SIGTERMException as err:
        exit_with_error("lvebm", "stopped", err, 128 + signal.SIGTERM)
    # Hydra sweepers (and W&B sweeps through Hydra) read the returned value as the objective.
    return metrics.get("val/w2")


if __name__ == "__main__":
    os.environ.setdefault("WANDB_SILENT", "true")  # the closing block names the W&B run and how to upload it
    sys.argv[1:] = normalise_overrides(sys.argv[1:])  # data.options.<name>=...: keys the config files do not hold
    if not any(arg.startswith("-") for arg in sys.argv[1:]):
        try:
            composed = check_overrides(CONFIG_DIR, "train", sys.argv[1:])
        except ConfigError as err:
            exit_with_error("lvebm", "error", err, 2)
        # Hydra resolves ${now:...} again when it starts: pin the run directory that was checked and prepared.
        if not any(arg.startswith("hydra.run.dir=") for arg in sys.argv[1:]):
            sys.argv.append(f"hydra.run.dir={composed.paths.output_dir}")
        PREPARED = prepare_or_exit(composed)
    main()
