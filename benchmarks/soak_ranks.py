"""The processes of a DDP launch, for ``benchmarks/soak.py --devices N``: find each rank, stop one the way a cluster
loses it, and wait until every other has stopped, with the exit status each gives.

``python train.py trainer=ddp_cpu`` is rank 0 (the launching process); Lightning starts ranks 1..N-1 as its
children (their command lines end in ``hydra.job.name=train_ddp_process_<rank>``). A rank whose launching process
dies is re-parented; this process makes itself the reaper of such orphans (Linux ``PR_SET_CHILD_SUBREAPER``), so
that it can wait for them and read their exit status as it reads the launching process's.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

RANK = re.compile(rb"hydra\.job\.name=train_ddp_process_(\d+)")


def become_subreaper() -> None:
    """Orphaned descendants (ranks whose launching process died) become this process's children."""
    if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def child_ranks(launcher: int) -> dict[int, int]:
    """{rank: pid} of the launching process's child ranks that are running now."""
    found = {}
    try:
        children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    except OSError:
        return found
    for pid in children:
        try:
            match = RANK.search(Path(f"/proc/{pid}/cmdline").read_bytes())
        except OSError:
            continue
        if match:
            found[int(match.group(1))] = int(pid)
    return found


def wait_for_ranks(proc: subprocess.Popen, devices: int, timeout: float = 300.0) -> dict[int, int]:
    """Every child rank's pid once all have started (empty if the launch ended first)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        ranks = child_ranks(proc.pid)
        if len(ranks) == devices - 1:
            return ranks
        time.sleep(0.01)
    return {}


@dataclass
class Stop:
    """How a launch ended after one of its processes was stopped: every other process's exit status (None:
    reaped by its own parent, the launching process) and the seconds until the last was gone."""

    statuses: dict[str, int | None]
    seconds: float


def stop(proc: subprocess.Popen, ranks: dict[int, int], victim: int, signum: int, bound: float) -> Stop:
    """Send ``signum`` to rank ``victim`` (0: the launching process; -1: every rank) and wait up to ``bound``
    seconds for all ranks to end; what is left then is killed and reported as status "hung"."""
    pids = {0: proc.pid, **ranks}
    for rank, pid in pids.items():
        if victim in (rank, -1):
            os.kill(pid, signum)
    start, statuses = time.monotonic(), {}
    deadline = start + bound
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            statuses["rank 0"] = proc.returncode
        for rank, pid in ranks.items():
            ended = _ended(pid)
            if ended is not False:
                statuses[f"rank {rank}"] = ended
        if len(statuses) == len(pids):
            break
        time.sleep(0.01)
    for rank, pid in pids.items():
        if f"rank {rank}" not in statuses:
            statuses[f"rank {rank}"] = "hung"  # type: ignore[assignment]
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    reap()
    return Stop({k: v for k, v in statuses.items() if k != f"rank {victim}"}, time.monotonic() - start)


def _ended(pid: int) -> int | None | bool:
    """False while ``pid`` runs; its exit status once it ended as this process's child (an orphan); None once it
    is gone otherwise (its parent, the launching process, reaped it)."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not ours: the launching process is alive and is its parent
        return None if not Path(f"/proc/{pid}").exists() or _zombie(pid) else False
    return os.waitstatus_to_exitcode(status) if done else False


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def reap() -> None:
    """Collect orphaned ranks that ended after their launch (a finished run's ranks outlive rank 0 briefly)."""
    while True:
        try:
            done, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not done:
            return
