"""Train a latent-variable EBM: ``python train.py [hydra overrides]`` (see README.md and conf/train.yaml).

Exit status: 0 done; 1 training diverged (the last good checkpoint is kept); 2 bad input (config, data file or
checkpoint), reported in one line before anything is written; 143 stopped by SIGTERM after saving last.ckpt.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from lvebm_lightning.checkpointing import CheckpointError
from lvebm_lightning.config import ConfigError, check_overrides
from lvebm_lightning.data.files import DataFileError
from lvebm_lightning.divergence import TrainingDiverged
from lvebm_lightning.errors import exit_with_error
from lvebm_lightning.training import train

CONFIG_DIR = Path(__file__).resolve().parent / "conf"


def check_multirun(cfg: DictConfig) -> None:
    """Hydra multirun runs its jobs one after another in this process, which Lightning's DDP launcher (it
    re-runs the command line for each rank) cannot follow: refuse the combination before anything starts."""
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    devices, strategy = cfg.trainer.get("devices", 1), str(cfg.trainer.get("strategy", "auto"))
    several = not (isinstance(devices, int) and devices == 1) or "ddp" in strategy
    if several or int(cfg.trainer.get("num_nodes", 1) or 1) > 1:
        raise ConfigError(
            f"Hydra multirun (-m) cannot launch DDP (trainer.devices={devices}, trainer.strategy={strategy}); "
            "set trainer.devices=1, or sweep multi-device runs with W&B (conf/sweep/, README 'Sweeps')."
        )


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        check_multirun(cfg)
        metrics = train(cfg)
    except (ConfigError, CheckpointError, DataFileError) as err:
        exit_with_error("lvebm", "error", err, 2)
    except TrainingDiverged as err:
        exit_with_error("lvebm", "training diverged", err, 1)
    except SIGTERMException as err:
        exit_with_error("lvebm", "stopped", err, 128 + signal.SIGTERM)
    # Hydra sweepers (and W&B sweeps through Hydra) read the returned value as the objective.
    return metrics.get("val/w2")


if __name__ == "__main__":
    # A plain run (no --flags, no multirun) is composed and checked before Hydra creates its run directory.
    if not any(arg.startswith("-") for arg in sys.argv[1:]):
        try:
            check_overrides(CONFIG_DIR, "train", sys.argv[1:])
        except ConfigError as err:
            exit_with_error("lvebm", "error", err, 2)
    main()
