"""A rank lost under DDP (2 gloo processes, ``python train.py trainer=ddp_cpu``): every surviving process stops within
seconds, exit status 3, with one line naming the lost rank, the step, the last good checkpoint and its step, and
the command that resumes; that command then finishes the run, continuing the same W&B run without logging a step
twice. A rank that hangs instead of dying is given up at the collective timeout (``conf/trainer/ddp_cpu.yaml``).
A killed launching process is one of the stops of ``tests/test_soak.py``: rank 1 exits 3 within the bound and its
one line names the launcher, the last good checkpoint and the resume command, which the soak then runs."""

from __future__ import annotations

import ctypes
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers.wandb_records import read_offline_run

ROOT = Path(__file__).resolve().parents[1]
MAX_STEPS = 200
TINY = [
    "debug=fast", "test=false", "trainer=ddp_cpu", "trainer.devices=2", "data.n_train=131", "data.batch_size=16",
    "sampler.negative.pool_size=65", "callbacks.model_checkpoint.every_n_train_steps=5",
    f"trainer.max_steps={MAX_STEPS}", "trainer.val_check_interval=100000", "~callbacks.best_checkpoint",
    "~callbacks.metrics", "~callbacks.gallery", "+trainer.enable_progress_bar=false",
]
REPORT = re.compile(
    r"^lvebm: rank lost: (?P<lost>.+), at step (?P<step>\d+) of rank (?P<rank>\d) \(this process\); last good "
    r"checkpoint (?P<ckpt>\S+) \(step (?P<ckpt_step>\d+)\); resume with: (?P<command>.+)$", re.M
)
BOUND_S = 30  # detection takes about a second; the rest is the machine's load


def start(run: Path, *overrides: str) -> subprocess.Popen:
    run.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    with open(f"{run}.log", "a") as log:
        return subprocess.Popen([sys.executable, "train.py", *TINY, f"hydra.run.dir={run}", *overrides], cwd=ROOT,
                                env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def wait_for_checkpoint(proc: subprocess.Popen, run: Path, step: int = 5) -> None:
    last, deadline = run / "checkpoints" / "last.ckpt", time.monotonic() + 300
    while not (last.is_file() and torch.load(last, weights_only=True)["global_step"] >= step):
        assert proc.poll() is None and time.monotonic() < deadline, Path(f"{run}.log").read_text()[-3000:]
        time.sleep(0.05)


def child_rank(launcher: subprocess.Popen) -> int:
    """The pid of rank 1: the launching process's child that runs train.py (W&B's service is another child)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for pid in Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split():
            if b"hydra.job.name=train_ddp_process_1" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
        time.sleep(0.05)
    raise AssertionError("rank 1 did not start")


def reports(run: Path) -> list[re.Match]:
    text = Path(f"{run}.log").read_text()
    assert "Traceback" not in text.split("lvebm: rank lost")[-1], text[-3000:]
    found = list(REPORT.finditer(text))
    assert len(found) == text.count("lvebm: rank lost"), text[-3000:]
    return found


def check_report(report: re.Match, run: Path) -> None:
    """The checkpoint named is the run's last.ckpt, at the step named; the resume command names it."""
    last = run / "checkpoints" / "last.ckpt"
    assert Path(report["ckpt"]) == last.resolve()
    assert int(report["ckpt_step"]) == torch.load(last, weights_only=True)["global_step"] >= 5
    assert int(report["ckpt_step"]) <= int(report["step"]) < MAX_STEPS
    assert report["command"].startswith("python train.py ") and report["command"].endswith(f"ckpt_path={last}")


def resume(report: re.Match, run: Path) -> None:
    """Run the printed command (``python`` being this interpreter) to the end."""
    command = shlex.split(report["command"])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    done = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == MAX_STEPS


@pytest.mark.slow
def test_a_killed_rank_stops_the_other_with_one_line_and_the_command_resumes_the_same_wandb_run(tmp_path):
    run = tmp_path / "run"
    proc = start(run)
    wait_for_checkpoint(proc, run, step=20)  # W&B has logged steps 9 and 19
    rank1 = child_rank(proc)
    os.kill(rank1, signal.SIGKILL)
    killed = time.monotonic()
    assert proc.wait(timeout=BOUND_S) == 3
    assert time.monotonic() - killed < BOUND_S
    (report,) = reports(run)
    assert report["lost"] == f"rank 1 (pid {rank1}) killed by SIGKILL" and report["rank"] == "0"
    check_report(report, run)
    first = {p.name for p in (run / "wandb").glob("offline-run-*")}
    resume(report, run)
    runs = sorted((run / "wandb").glob("offline-run-*"), key=lambda p: p.name)
    assert len(runs) == 2 and {r.name for r in runs} > first
    records = [read_offline_run(r) for r in runs]
    assert records[0].run_id == records[1].run_id  # the same W&B run, continued
    steps = [[row["trainer/global_step"] for row in r.history if "train/loss" in row] for r in records]
    assert steps[0] and steps[0] + steps[1] == list(range(9, MAX_STEPS, 10))  # no step logged twice, or missing


@pytest.fixture
def subreaper():
    """Make this process the reaper of orphans, so that a rank whose launching process died can be waited for."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    yield
    libc.prctl(36, 0, 0, 0, 0)


def wait_orphan(pid: int, timeout: float) -> tuple[int, float]:
    """The exit status of process ``pid`` (re-parented to this one) and how long it took."""
    start, deadline = time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), time.monotonic() - start
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"rank {pid} did not stop within {timeout} s")


@pytest.mark.slow
def test_a_crash_in_another_ranks_code_stops_rank_0_with_one_line(tmp_path):
    run = tmp_path / "run"
    proc = start(run, "logger=csv", "+callbacks.crash._target_=tests.helpers.crash.CrashAtStep",
                 "+callbacks.crash.step=12", "+callbacks.crash.rank=1")
    assert proc.wait(timeout=300) == 3
    (report,) = reports(run)
    assert re.fullmatch(r"rank 1 \(pid \d+\) exited with status 1", report["lost"]) and report["rank"] == "0"
    assert "simulated crash at step 12" in Path(f"{run}.log").read_text()  # rank 1's own error, in its own words
    check_report(report, run)


@pytest.mark.slow
def test_a_rank_that_hangs_is_given_up_at_the_collective_timeout(tmp_path, subreaper):
    timeout_s = 30  # also the time rank 1 has to start and join (about 15 s on a slow 2-core machine)
    run = tmp_path / "run"
    proc = start(run, "logger=csv", "trainer.strategy.timeout.minutes=0",
                 f"+trainer.strategy.timeout.seconds={timeout_s}")
    wait_for_checkpoint(proc, run)
    rank1 = child_rank(proc)
    os.kill(rank1, signal.SIGSTOP)  # alive but silent: no process exit for a watch to see
    stopped = time.monotonic()
    try:
        assert proc.wait(timeout=timeout_s + BOUND_S) == 3
        assert time.monotonic() - stopped < timeout_s + BOUND_S
    finally:
        os.kill(rank1, signal.SIGCONT)
    status, _ = wait_orphan(rank1, BOUND_S)  # woken, rank 1 finds its launching process gone and says so
    report, woken = reports(run)
    assert report["rank"] == "0" and "another rank died or stopped answering" in report["lost"]
    check_report(report, run)
    assert status == 3 and woken["rank"] == "1"
