"""Checkpoints by time as well as by steps: ``callbacks.timed_checkpoint`` writes last.ckpt whenever its
``train_time_interval`` has passed, however far the next step checkpoint is (the module optimizes manually, where
Lightning's own ModelCheckpoint ignores a time interval)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import lightning.pytorch as pl
import pytest

from lvebm_lightning.config.validation import ConfigError
from lvebm_lightning.training.run import prepare, train
from lvebm_lightning.training.timed_checkpoint import TimedCheckpoint
from tests.conftest import compose_config
from tests.helpers.faults import SavedSteps

STEPS = 4
RUN = [
    "logger=csv", "~callbacks.gallery", "~callbacks.metrics", "~callbacks.best_checkpoint", "test=false",
    f"trainer.max_steps={STEPS}", "callbacks.model_checkpoint.every_n_train_steps=1000",
    "+trainer.enable_progress_bar=false", "+callbacks.seen._target_=tests.helpers.faults.SavedSteps",
]


def saved_steps(tmp_path: Path, *overrides: str) -> list[int | None]:
    cfg = compose_config(tmp_path, [*RUN, *overrides])
    train(cfg)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()  # written at the end, as always
    return SavedSteps.seen


def test_an_interval_of_zero_writes_last_ckpt_after_every_step(tmp_path):
    assert saved_steps(tmp_path, "callbacks.timed_checkpoint.train_time_interval.minutes=0") == [None, 1, 2, 3]


def test_before_the_interval_has_passed_nothing_is_written(tmp_path):
    assert saved_steps(tmp_path, "callbacks.timed_checkpoint.train_time_interval.minutes=60") == [None] * STEPS


def test_the_default_bounds_a_loss_by_ten_minutes_or_500_steps_whichever_comes_first(tmp_path):
    callbacks = prepare(compose_config(tmp_path, ["logger=csv"])).callbacks
    by_time = [c for c in callbacks if isinstance(c, TimedCheckpoint)]
    by_steps = [c for c in callbacks if type(c) is pl.callbacks.ModelCheckpoint and c.save_last]
    assert len(by_time) == 1 and by_time[0]._train_time_interval == timedelta(minutes=10)
    assert by_time[0].save_last and by_time[0].save_top_k == 0
    assert [c._every_n_train_steps for c in by_steps] == [10]  # debug=fast's 500 -> 10
    assert by_time[0].dirpath == by_steps[0].dirpath


def test_a_negative_interval_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="callbacks.timed_checkpoint: train_time_interval must be"):
        prepare(compose_config(tmp_path, ["callbacks.timed_checkpoint.train_time_interval.minutes=-1"]))
