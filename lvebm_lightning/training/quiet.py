"""Third-party console chatter that tells a user of this project nothing, silenced in one place.

A run's console holds its progress bar, the project's own lines (resuming, the closing "where everything is"
block) and real problems. Silenced: Lightning's informational lines (accelerator report, logger and model
registry tips, "Restoring states ..."), and the warnings below, each of which is either about a choice this
project makes on purpose or about a library's internals. W&B's own lines are silenced by ``WANDB_SILENT``
(``train.py``); the closing block names the offline run and the command that uploads it.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

KNOWN_WARNINGS = (
    # manual optimization: checkpoints hold the post-step state, which is what this project saves
    r".*no pre-optimization state was saved.*",
    # under DDP the evaluation metrics are computed from samples gathered from every rank (the same on each)
    r".*when logging on epoch level in distributed setting.*",
    # an epoch of a small data set is shorter than log_every_n_steps: steps are counted across epochs
    r".*is smaller than the logging interval.*",
    # the CSV logger and W&B share the run directory Hydra just created
    r".*Experiment logs directory .* exists and is not empty.*",
    # resumed into a new directory: the best score since the resume is reported (tracking.run_summary)
    r".*The dirpath has changed from.*",
    # library internals
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
)


def known_warnings() -> None:
    """Ignore ``KNOWN_WARNINGS`` (call inside ``warnings.catch_warnings()``)."""
    for message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


@contextlib.contextmanager
def lightning() -> Iterator[None]:
    """Lightning's and Fabric's informational log lines off (warnings and errors still shown)."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
