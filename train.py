"""Train a latent-variable EBM: ``python train.py [hydra overrides]`` (see README.md and conf/train.yaml)."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lvebm_lightning.checkpointing import CheckpointError
from lvebm_lightning.config import ConfigError
from lvebm_lightning.data.files import DataFileError
from lvebm_lightning.training import train


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
        print(f"lvebm: error: {err}", file=sys.stderr)
        sys.exit(2)
    # Hydra sweepers (and W&B sweeps through Hydra) read the returned value as the objective.
    return metrics.get("val/w2")


if __name__ == "__main__":
    main()
