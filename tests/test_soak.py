"""The DDP kill soak, short (``python -m benchmarks.soak --devices 2 --kills 4``): one stop of each kind (SIGKILL of a
child rank, of the launching process, of a rank during a checkpoint write, SIGTERM to every rank), each followed by
a resume from last.ckpt; the final state equals the uninterrupted 2-rank run's bit for bit, and the final checkpoint
holds every datum's particles once and the whole pool. Resumes on another number of ranks (2 -> 1 -> 2) are checked
step by step in ``tests/test_ddp.py`` (runs C and E); the soak that alternates them (``--alternate``) and the full
soak (``--duration``) are benchmarks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_rank_loss import REPORT

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("SIGKILL a rank", "SIGKILL the launcher", "SIGKILL mid-write", "SIGTERM")


def soak(tmp_path: Path, kills: int, *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", "--devices", "2", "--kills", str(kills), "--max-steps", "200",
         "--every", "10", "--window", "1", "--pool-size", "200000", "--work", str(tmp_path), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    for kind in KINDS[:kills]:  # killed once, survived once (last.ckpt loaded afterwards)
        assert re.search(rf"^{kind}\s+1\s+1\s", done.stdout, re.M), done.stdout
    assert "ranks that did not stop as they must: 0" in done.stdout
    assert "leftover temporary files at the end: 0" in done.stdout
    assert "every datum's particles once and the whole pool, all finite: yes" in done.stdout
    return done.stdout


@pytest.mark.slow
def test_a_two_rank_run_killed_every_way_ends_bit_equal_to_the_uninterrupted_one(tmp_path):
    out = soak(tmp_path, 4)
    assert "resumes from last.ckpt: 4 (4 under 2 rank(s))" in out
    assert "equal the uninterrupted 2-rank run's bit for bit: yes" in out
    # The survivor of each SIGKILL said in one line what was lost and how to resume (tests/test_rank_loss.py
    # checks the line's parts against the run; here: the launcher's loss, reported by rank 1).
    (log,) = tmp_path.glob("*/soak.log")
    last = log.parent / "soak" / "checkpoints" / "last.ckpt"
    lost = [m for m in REPORT.finditer(log.read_text()) if "the launching process" in m["lost"]]
    assert lost, log.read_text()[-3000:]
    for m in lost:
        assert re.fullmatch(r"rank 0 \(the launching process, pid \d+\) is gone", m["lost"]) and m["rank"] == "1"
        assert Path(m["ckpt"]) == last.resolve() and int(m["ckpt_step"]) <= int(m["step"])
        assert m["command"].startswith("python train.py ") and m["command"].endswith(f"ckpt_path={last}")
