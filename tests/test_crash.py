"""Crash safety of ``python train.py``: SIGKILL during training and during a checkpoint write, SIGTERM (also
under DDP), then ``python train.py ckpt_path=...`` continues; each run is a real subprocess."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lvebm_lightning.training.run import train
from tests.conftest import compose_config
from tests.helpers.checkpoints import assert_identical, training_state

ROOT = Path(__file__).resolve().parents[1]
MAX_STEPS, EVERY = 60, 5
RUN = [
    "logger=csv", "~callbacks.gallery", "~callbacks.metrics", "~callbacks.best_checkpoint", "test=false",
    f"trainer.max_steps={MAX_STEPS}", f"callbacks.model_checkpoint.every_n_train_steps={EVERY}",
    "+trainer.enable_progress_bar=false",
]


def start(run: Path, *overrides: str) -> subprocess.Popen:
    """``python train.py`` in the background, its output in ``<run>.log``."""
    run.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{run}.log", "a") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "train.py", "debug=fast", "trainer.accelerator=cpu", *RUN, f"hydra.run.dir={run}",
             *overrides],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
        )


def finish(proc: subprocess.Popen, run: Path, timeout: float = 300) -> tuple[int, str]:
    """Wait for the run; its exit status and output."""
    rc = proc.wait(timeout=timeout)
    return rc, Path(f"{run}.log").read_text()


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float = 240) -> None:
    """Poll ``condition`` every millisecond until it holds; fail if the run ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended (status {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def resume(run: Path, *overrides: str) -> Path:
    """Continue ``run`` in place from its last.ckpt until max_steps; returns last.ckpt."""
    last = run / "checkpoints" / "last.ckpt"
    rc, out = finish(start(run, f"ckpt_path={last}", *overrides), run)
    assert rc == 0, out[-3000:]
    return last


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The training state of the same run, uninterrupted."""
    run = tmp_path_factory.mktemp("reference") / "run"
    train(compose_config(run, RUN))
    return training_state(run / "checkpoints" / "last.ckpt")


@pytest.mark.slow
def test_sigkill_during_training_then_resume_equals_an_uninterrupted_run(tmp_path, reference):
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    proc = start(run)
    wait_for(last.is_file, proc, "the first checkpoint")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    killed_at = torch.load(last, weights_only=True)["global_step"]
    assert EVERY <= killed_at < MAX_STEPS
    final = training_state(resume(run))
    assert_identical(final, reference, "resumed after SIGKILL")


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_leaves_a_loadable_last_ckpt(tmp_path):
    # A 2-million-pair pool makes each checkpoint ~24 MB, long enough to be caught half-written.
    big = ["sampler.negative.pool_size=2000000", "trainer.max_steps=20"]
    run = tmp_path / "run"
    folder = run / "checkpoints"
    last = folder / "last.ckpt"
    proc = start(run, *big)
    wait_for(last.is_file, proc, "the first checkpoint")
    wait_for(lambda: any(folder.glob(".last.ckpt.*.tmp")), proc, "the second checkpoint write")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    partial = list(folder.glob(".last.ckpt.*.tmp"))
    assert len(partial) == 1  # killed mid-write: the temporary file was never renamed
    ckpt = torch.load(last, weights_only=True)  # ... and last.ckpt is the previous, complete one
    assert ckpt["global_step"] == EVERY and ckpt["callbacks"]["NegativePool"]["pool"].shape == (2_000_000, 3)
    final = torch.load(resume(run, *big), weights_only=True)
    assert final["global_step"] == 20
    assert not partial[0].exists() and list(folder.glob(".*.tmp")) == []  # the next write cleared the leftover


@pytest.mark.slow
@pytest.mark.parametrize("ranks", [1, 2])
def test_sigterm_saves_last_ckpt_and_exits_143_then_resumes(tmp_path, reference, ranks):
    ddp = ["trainer=ddp_cpu", "trainer.devices=2"] if ranks == 2 else []
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    proc = start(run, *ddp)
    wait_for(last.is_file, proc, "the first checkpoint")
    proc.send_signal(signal.SIGTERM)
    rc, out = finish(proc, run, timeout=120)
    assert rc == 128 + signal.SIGTERM, out[-3000:]
    stopped = re.search(r"lvebm: stopped: stopped by SIGTERM at step (\d+); saved (\S+), resume with", out)
    assert stopped, out[-3000:]
    step = int(stopped.group(1))
    assert Path(stopped.group(2)) == last and EVERY <= step < MAX_STEPS
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == step
    assert len(ckpt["lvebm"]["generator_states"]) == ranks
    assert bool(torch.isfinite(ckpt["lvebm"]["particles"]).all())  # every rank's particles were gathered
    final = training_state(resume(run, *ddp))
    if ranks == 1:
        assert_identical(final, reference, "resumed after SIGTERM")
    else:  # that a 2-rank resume is bit-identical to an uninterrupted 2-rank run is checked in tests/test_ddp.py
        assert final["global_step"] == MAX_STEPS
