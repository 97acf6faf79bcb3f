"""Losing a rank under DDP: every surviving process stops within seconds and says in one line what was lost.

A rank can die without a word (SIGKILL, the kernel's OOM killer, a crash in its own code). Its peers would learn
of it from a failed collective (gloo: a long traceback ending in "Connection reset by peer"), or, when the peer
hangs instead of dying, only at the process group's timeout (30 minutes unless set). Here:

- ``WatchedDDPStrategy`` is Lightning's ``DDPStrategy`` (``conf/trainer/ddp*.yaml`` set its collective
  ``timeout``, which bounds the wait for a rank that hangs) whose launcher, ``WatchedLauncher``, starts a watch
  thread in every process in place of Lightning's child observer (which SIGKILLs every process, the launching
  one too, 5 s after any child exits non-zero, also after the ranks stopped together on purpose). The launching
  process (rank 0 of the node) polls its child ranks, every child polls whether the launching process is alive,
  once a second each;
- an exception of a collective in the main thread (``stop_after_error``, called by ``training.run``) is reported
  the same way.

The report is one line on stderr: which rank was lost (its pid, and its signal or exit status where this process
can know it), the step this process was at, the last good checkpoint and its step, and the exact command that
resumes; then the process exits with status 3 (``EXIT_RANK_LOST``). A checkpoint write in progress is let finish
first (``checkpointing.WRITING``), and checkpoints are atomic anyway, so none is left half-written. Ranks that stop
together on purpose (SIGTERM, divergence, a refused checkpoint: ``AGREED_STOPS``) or at the end of the run disarm
the watch first (``RankWatch``, ``disarm``), so that their exits are not taken for a loss.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.fabric.utilities.distributed import _set_num_threads_if_needed
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lvebm_lightning.errors import one_line
from lvebm_lightning.training import checkpointing
from lvebm_lightning.training.divergence import TrainingDiverged

EXIT_RANK_LOST = 3
POLL_S = 1.0
LAUNCHER_PID = "LVEBM_LAUNCHER_PID"
"""Set by the launching process for its children: whose death they watch for."""
AGREED_STOPS = (SIGTERMException, TrainingDiverged, checkpointing.CheckpointError)
"""Exceptions that every rank raises at the same step (after a collective that agrees on them)."""
PEER_ERRORS = ("connection reset", "connection closed", "broken pipe", "connection refused", "timed out", "timeout",
               "pair closure", "gloo", "nccl", "socket")
"""Lower-case markers of a backend's runtime error for a failed collective (gloo's timeout reads "Application
timeout caused pair closure", its lost peer "Connection reset by peer")."""

_armed = threading.Event()
_report = threading.Lock()
_check: Callable[[], str | None] | None = None  # this process's watch: what was lost, or None


def disarm() -> None:
    """The ranks are stopping together (or are done with each other): peers' exits are no longer a loss."""
    _armed.clear()


class RankWatch(pl.Callback):
    """Disarms the watch as soon as the ranks stop together on purpose (before any of them saves or exits)."""

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, AGREED_STOPS):
            disarm()


class WatchedLauncher(_SubprocessScriptLauncher):
    """Lightning's script launcher (each rank re-runs the command line), with the watch described above."""

    def launch(self, function: Callable, *args: Any, trainer: pl.Trainer | None = None, **kwargs: Any) -> Any:
        global _check
        self.cluster_environment.validate_settings(num_devices=self.num_processes, num_nodes=self.num_nodes)
        if not self.cluster_environment.creates_processes_externally:
            os.environ[LAUNCHER_PID] = str(os.getpid())  # the children inherit it
            self._call_children_scripts()
            first = self.cluster_environment.node_rank() * self.num_processes
            _check = lambda: children_lost(self.procs, first)  # noqa: E731
        elif os.environ.get(LAUNCHER_PID):
            launcher = int(os.environ[LAUNCHER_PID])
            _check = lambda: launcher_lost(launcher)  # noqa: E731
        if _check is not None and trainer is not None:
            _armed.set()
            threading.Thread(target=watch, args=(trainer,), daemon=True, name="lvebm-rank-watch").start()
        _set_num_threads_if_needed(num_processes=self.num_processes)
        return function(*args, **kwargs)


class WatchedDDPStrategy(DDPStrategy):
    """``DDPStrategy`` (same arguments) launched by ``WatchedLauncher`` when it launches by re-running the script."""

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, _SubprocessScriptLauncher):
            self._launcher = WatchedLauncher(self.cluster_environment, self.num_processes, self.num_nodes)


def ended(returncode: int) -> str:
    """How a process ended, from its return code (negative: the signal that killed it)."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


def children_lost(procs: list[Any], first_rank: int) -> str | None:
    """The first child rank (``procs[j]`` is rank ``first_rank + j + 1``) that has exited with a non-zero status."""
    for j, proc in enumerate(procs):
        code = proc.poll()
        if code:
            return f"rank {first_rank + j + 1} (pid {proc.pid}) {ended(code)}"
    return None


def launcher_lost(pid: int) -> str | None:
    """Whether the launching process ``pid`` (this process's parent) is gone: a child is re-parented when it dies."""
    if os.getppid() != pid:
        return f"rank 0 (the launching process, pid {pid}) is gone"
    return None


def watch(trainer: pl.Trainer) -> None:
    """Poll this process's watch once a second while armed; report a loss that outlasts one more poll (a stop the
    ranks agreed on disarms the watch within it)."""
    assert _check is not None
    while True:
        time.sleep(POLL_S)
        if _armed.is_set() and _check() is not None:
            time.sleep(POLL_S)
            lost = _check()
            if _armed.is_set() and lost is not None:
                report(trainer, lost)


@contextlib.contextmanager
def losses_reported(trainer: pl.Trainer) -> Iterator[None]:
    """Report a rank lost during the block (``stop_after_error``); any other exception passes through."""
    try:
        yield
    except Exception as err:
        stop_after_error(trainer, err)
        raise


def stop_after_error(trainer: pl.Trainer, err: BaseException) -> None:
    """After ``err`` ended fit or test in the main thread: when it is a collective that failed with peers, report
    the loss (the watch's finding if it has one within a few polls, else the error) and exit; otherwise return."""
    if trainer.world_size < 2 or isinstance(err, AGREED_STOPS) or not is_peer_error(err):
        return
    deadline = time.monotonic() + 3 * POLL_S
    while _check is not None and _armed.is_set() and time.monotonic() < deadline:
        lost = _check()
        if lost is not None:
            report(trainer, lost)
        time.sleep(0.1)
    first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
    report(trainer, f"a collective failed ({first}): another rank died or stopped answering")


def is_peer_error(err: BaseException) -> bool:
    """Whether ``err`` is a failed collective: torch's distributed errors, or a runtime error of the backend."""
    if isinstance(err, dist.DistError):
        return True
    return isinstance(err, RuntimeError) and any(marker in str(err).lower() for marker in PEER_ERRORS)


def last_good_checkpoint(trainer: pl.Trainer) -> tuple[Path, int] | None:
    """``last.ckpt`` of the run and its step (read lazily: only the step is loaded), or None if there is none."""
    path = checkpointing.CheckpointGuard.last_checkpoint_path(trainer).resolve()
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return path, int(ckpt["global_step"])
    except Exception:  # absent, or unreadable: then it is no good checkpoint to resume from
        return None


def resume_command(ckpt: Path | None) -> str:
    """This process's command line as ``python train.py ...`` with ``ckpt_path=ckpt`` (none: start again), without
    the per-rank arguments Lightning adds for its child ranks."""
    args, run_dir = [], False
    for arg in sys.argv[1:]:
        if arg.startswith(("ckpt_path=", "hydra.job.name=", "hydra.output_subdir=")):
            continue
        if arg.startswith("hydra.run.dir="):
            if run_dir:
                continue
            run_dir = True
        args.append(arg)
    script = os.path.relpath(sys.argv[0]) if os.path.isabs(sys.argv[0]) else sys.argv[0]
    return shlex.join(["python", script, *args, *([f"ckpt_path={ckpt}"] if ckpt else [])])


def describe(trainer: pl.Trainer, lost: str) -> str:
    """The report: what was lost, at which step, the last good checkpoint and how to go on."""
    found = last_good_checkpoint(trainer)
    where = f"{lost}, at step {trainer.global_step} of rank {trainer.global_rank} (this process)"
    if found is None:
        return f"{where}; no checkpoint was written yet; start again with: {resume_command(None)}"
    path, step = found
    return f"{where}; last good checkpoint {path} (step {step}); resume with: {resume_command(path)}"


def report(trainer: pl.Trainer, lost: str) -> NoReturn:
    """Print the one-line report and end this process with ``EXIT_RANK_LOST`` (once, whichever thread is first),
    after a checkpoint write in progress has finished."""
    with _report, checkpointing.WRITING:
        print(f"lvebm: rank lost: {one_line(describe(trainer, lost))}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(EXIT_RANK_LOST)
