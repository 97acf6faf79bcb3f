"""Train a latent-variable EBM: ``python train.py [hydra overrides]`` (see README.md and conf/train.yaml)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from lvebm_lightning.checkpointing import CheckpointError
from lvebm_lightning.config import ConfigError
from lvebm_lightning.data.files import DataFileError
from lvebm_lightning.training import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except (ConfigError, CheckpointError, DataFileError) as err:
        print(f"lvebm: error: {err}", file=sys.stderr)
        sys.exit(2)
    # Hydra sweepers (and W&B sweeps through Hydra) read the returned value as the objective.
    return metrics.get("val/w2")


if __name__ == "__main__":
    main()
