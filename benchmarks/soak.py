"""Soak test of crash safety: train while killing and resuming ``python train.py`` at random moments.

    python -m benchmarks.soak --duration 300 --max-steps 600 --every 20 [--seed 0] [-- extra overrides ...]

First an uninterrupted reference run; then the same run in another folder, launched again and again with
``ckpt_path=<folder>/checkpoints/last.ckpt``, each launch stopped after a random delay by one of

- SIGKILL at a random moment (start-up, checkpoint restore, training, validation or a checkpoint write);
- SIGKILL while a checkpoint is being written (as soon as ``.last.ckpt.*.tmp`` appears);
- SIGTERM (once training runs, the run must save last.ckpt and exit 143; during start-up, before there is
  anything new to save, the default action ends it).

until ``--duration`` seconds have passed; the last launch then runs to ``--max-steps``. After every kill,
``last.ckpt`` must load with ``torch.load(weights_only=True)``. A heartbeat callback records the last finished
optimizer step, so the steps lost by a kill are (heartbeat step) - (last.ckpt's step): at most the checkpoint
interval for SIGKILL and zero for SIGTERM. At the end the soaked run's parameters, particles, pool, generators,
optimizer, scheduler and data order are compared bit for bit with the reference run's (CPU, one process). The
report goes to a new file in ``benchmarks/results/soak/``; the exit status is 0 only when every check holds.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from benchmarks.common import ROOT, Report, machine, matmul_gflops, report_path
from tests.helpers.checkpoints import differences, training_state

KINDS = ("SIGKILL at random", "SIGKILL mid-write", "SIGTERM")


class Heartbeat(pl.Callback):
    """Writes the optimizer step to ``path`` (atomically) after every training batch."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        tmp = Path(f"{self.path}.tmp")
        tmp.write_text(str(trainer.global_step))
        os.replace(tmp, self.path)


@dataclass
class Soak:
    """What the soak saw: per kind of stop, the number of kills and the steps lost by each survived kill (a
    kill is survived when last.ckpt then loads, or when there was none yet and the next launch starts afresh)."""

    kills: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    lost: dict[str, list[int]] = field(default_factory=lambda: {k: [] for k in KINDS})
    launches: int = 0


def overrides(args: argparse.Namespace, run: Path) -> list[str]:
    return [
        "debug=fast", "trainer.accelerator=cpu", "logger=csv", "~callbacks.gallery", "test=false",
        f"trainer.max_steps={args.max_steps}", f"callbacks.model_checkpoint.every_n_train_steps={args.every}",
        f"sampler.negative.pool_size={args.pool_size}", "+trainer.enable_progress_bar=false",
        "+callbacks.heartbeat._target_=benchmarks.soak.Heartbeat", f"+callbacks.heartbeat.path={run}.heartbeat",
        f"hydra.run.dir={run}", *args.overrides,
    ]


def launch(args: argparse.Namespace, run: Path, resume: bool) -> subprocess.Popen:
    Path(f"{run}.heartbeat").unlink(missing_ok=True)
    extra = [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"] if resume else []
    with open(f"{run}.log", "a") as log:
        return subprocess.Popen(
            [sys.executable, "train.py", *overrides(args, run), *extra], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )


def heartbeat(run: Path) -> int | None:
    try:
        return int(Path(f"{run}.heartbeat").read_text())
    except (FileNotFoundError, ValueError):
        return None


def checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def wait_until(condition: Any, proc: subprocess.Popen) -> bool:
    """Poll every millisecond until ``condition()`` holds (True) or the process ends (False)."""
    while not condition():
        if proc.poll() is not None:
            return False
        time.sleep(0.001)
    return True


def run_reference(args: argparse.Namespace, work: Path) -> tuple[Path, float, float]:
    """The uninterrupted run: its last.ckpt, wall time and start-up time (launch to first heartbeat)."""
    run = work / "reference"
    t0 = time.monotonic()
    proc = launch(args, run, resume=False)
    wait_until(lambda: heartbeat(run) is not None, proc)
    startup = time.monotonic() - t0
    if proc.wait() != 0:
        sys.exit(f"the reference run failed; see {run}.log")
    return run / "checkpoints" / "last.ckpt", time.monotonic() - t0, startup


def soak(args: argparse.Namespace, work: Path, startup: float, rng: random.Random) -> tuple[Soak, Path, float]:
    run = work / "soak"
    last = run / "checkpoints" / "last.ckpt"
    seen = Soak()
    t0 = time.monotonic()
    while True:
        leftovers = set(last.parent.glob(".last.ckpt.*.tmp"))  # left by a kill during a write
        proc = launch(args, run, resume=last.is_file())
        seen.launches += 1
        if time.monotonic() - t0 > args.duration:
            if proc.wait() != 0:
                sys.exit(f"the final launch failed; see {run}.log")
            return seen, last, time.monotonic() - t0
        kind = rng.choices(KINDS, weights=(1.0 - args.write_kills - args.sigterms, args.write_kills, args.sigterms))[0]
        if kind == "SIGKILL mid-write":
            # Wait for training to run, then for the next write of last.ckpt to begin.
            alive = wait_until(lambda: heartbeat(run) is not None, proc) and wait_until(
                lambda old=leftovers: bool(set(last.parent.glob(".last.ckpt.*.tmp")) - old), proc)
        else:
            deadline = time.monotonic() + rng.uniform(0.5 * startup, startup + args.window)
            alive = wait_until(lambda end=deadline: time.monotonic() > end, proc)
        if not alive:  # the launch ended by itself: finished, or failed
            if proc.returncode != 0:
                sys.exit(f"a launch failed (status {proc.returncode}); see {run}.log")
            return seen, last, time.monotonic() - t0
        done = heartbeat(run)
        proc.send_signal(signal.SIGTERM if kind == "SIGTERM" else signal.SIGKILL)
        rc = proc.wait()
        seen.kills[kind] += 1
        # Once training runs, SIGTERM must save and exit 143; during start-up it simply ends the process.
        if kind == "SIGTERM" and done is not None and rc != 128 + signal.SIGTERM:
            sys.exit(f"SIGTERM ended a training launch with status {rc}, expected 143; see {run}.log")
        try:
            saved = checkpoint_step(last) if last.is_file() else 0
        except Exception:  # a half-written or corrupt last.ckpt: the failure this soak looks for
            continue
        seen.lost[kind].append(max(0, (done if done is not None else saved) - saved))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of killing and resuming")
    parser.add_argument("--max-steps", type=int, default=600, help="trainer.max_steps of both runs")
    parser.add_argument("--every", type=int, default=20, help="checkpoint interval (optimizer steps)")
    parser.add_argument("--pool-size", type=int, default=500_000, help="negative pool M (a larger pool makes "
                        "checkpoint writes longer, easier to hit)")
    parser.add_argument("--window", type=float, default=3.0, help="random kills land up to this many seconds "
                        "after the launch's measured start-up time")
    parser.add_argument("--write-kills", type=float, default=0.25, help="share of kills aimed at a checkpoint write")
    parser.add_argument("--sigterms", type=float, default=0.2, help="share of stops by SIGTERM")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "soak", help="folder for both runs")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both runs (after --)")
    args = parser.parse_args()
    if args.max_steps % args.every:
        parser.error("--max-steps must be a multiple of --every, so both runs end on a checkpoint")
    work = args.work / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True)
    rng = random.Random(args.seed)

    reference, reference_s, startup = run_reference(args, work)
    seen, last, soak_s = soak(args, work, startup, rng)
    diffs = differences(training_state(last), training_state(reference))
    leftovers = list(last.parent.glob(".*.tmp"))

    rows = []
    for kind in KINDS:
        lost = seen.lost[kind]
        limit = 0 if kind == "SIGTERM" else args.every
        ratio = f"{max(lost) / limit:.2f}" if lost and limit else "-"
        mean = f"{sum(lost) / len(lost):.1f}" if lost else "-"
        rows.append((kind, seen.kills[kind], len(lost), mean, max(lost, default=0), limit, ratio))
    same = "yes" if not diffs else f"NO ({', '.join(diffs[:5])})"
    with Report(report_path("soak")) as report:
        report.line(machine("cpu", [matmul_gflops("cpu")]))
        report.line(f"# soak: {soak_s:.0f} s, {seen.launches} launches, max_steps {args.max_steps}, checkpoint every "
                    f"{args.every} steps, pool {args.pool_size}, seed {args.seed}, work folder {work}")
        report.table(("stop", "kills", "survived", "lost mean", "lost max", "limit", "max/limit"), rows)
        report.line(f"leftover temporary files at the end: {len(leftovers)}")
        report.line(f"wall time: reference {reference_s:.0f} s, soaked {soak_s:.0f} s (x{soak_s / reference_s:.2f}); "
                    f"start-up {startup:.1f} s a launch")
        report.line(f"final parameters, particles, pool, generators, optimizer, scheduler, data order equal the "
                    f"uninterrupted run's bit for bit: {same}")
    survived = all(len(seen.lost[k]) == seen.kills[k] for k in KINDS)
    bounded = all(max(seen.lost[k], default=0) <= (0 if k == "SIGTERM" else args.every) for k in KINDS)
    sys.exit(0 if survived and bounded and not diffs and not leftovers else 1)


if __name__ == "__main__":
    main()
