"""Train a latent-variable EBM: ``python train.py [hydra overrides]`` (see README.md and conf/train.yaml).

Exit status: 0 done; 1 training diverged (the last good checkpoint is kept); 2 bad input (config, data file or
checkpoint), reported in one line before anything is written; 143 stopped by SIGTERM after saving last.ckpt.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import hydra
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from lvebm_lightning.checkpointing import CheckpointError
from lvebm_lightning.config import ConfigError, check_overrides
from lvebm_lightning.data.files import DataFileError
from lvebm_lightning.module import TrainingDiverged
from lvebm_lightning.training import train

CONFIG_DIR = Path(__file__).resolve().parent / "conf"


def fail(prefix: str, err: BaseException, status: int) -> None:
    print(f"lvebm: {prefix}: {' '.join(str(err).split()) or type(err).__name__}", file=sys.stderr)
    sys.exit(status)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except (ConfigError, CheckpointError, DataFileError) as err:
        fail("error", err, 2)
    except TrainingDiverged as err:
        fail("training diverged", err, 1)
    except SIGTERMException as err:
        fail("stopped", err, 128 + signal.SIGTERM)
    # Hydra sweepers (and W&B sweeps through Hydra) read the returned value as the objective.
    return metrics.get("val/w2")


if __name__ == "__main__":
    # A plain run (no --flags, no multirun) is composed and checked before Hydra creates its run directory.
    if not any(arg.startswith("-") for arg in sys.argv[1:]):
        try:
            check_overrides(CONFIG_DIR, "train", sys.argv[1:])
        except ConfigError as err:
            fail("error", err, 2)
    main()
