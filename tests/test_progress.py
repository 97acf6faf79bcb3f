"""The training bar of a step-counted run written to a log file: one bar over the global steps, redrawn a bounded
number of times however many epochs the run spans (lvebm_lightning/training/progress.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = 100
REDRAWS = 20
"""``training.progress.progress_bar`` asks for about 20 redraws when stdout is not a terminal."""


def test_a_run_of_many_epochs_logs_one_bar_over_its_steps(tmp_path):
    """128 training data in batches of 64: 50 epochs of 2 steps. A bar per epoch would be drawn at least twice an
    epoch (100 draws); the steps bar is drawn at its start, every STEPS / REDRAWS steps and when it closes,
    whatever the two validations do."""
    done = subprocess.run(
        [sys.executable, "train.py", "debug=fast", "trainer.accelerator=cpu", f"trainer.max_steps={STEPS}",
         "trainer.val_check_interval=50", "data.n_train=128", "data.batch_size=64", "test=false", "logger=csv",
         "~callbacks.gallery", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = done.stdout + done.stderr
    draws = re.findall(r"([\w ]+): +\d+%\|[^|\r\n]*\| *(\d+)/(\d+|\?) \[", text)  # every draw of every bar
    assert 0 < len(draws) <= REDRAWS + 2, len(draws)
    assert {(desc, total) for desc, _, total in draws} == {("Training", str(STEPS))}  # one bar, over the steps
    assert [int(n) for _, n, _ in draws] == sorted(int(n) for _, n, _ in draws) and draws[-1][1] == str(STEPS)
