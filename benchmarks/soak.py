"""Soak test of crash safety: train while killing and resuming ``python train.py`` at random moments.

    python -m benchmarks.soak --duration 300 --max-steps 600 --every 20 [--seed 0] [-- extra overrides ...]
    python -m benchmarks.soak --devices 2 --duration 600 --max-steps 400 --every 20 --pool-size 200000
    python -m benchmarks.soak --devices 2 --alternate --duration 600 --max-steps 400 --every 20

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
optimizer, scheduler and data order are compared bit for bit with the reference run's (CPU, one process).

``--devices N`` soaks a DDP run of N gloo processes (``trainer=ddp_cpu``; ``soak_ranks`` finds and stops them):
the stops are SIGKILL of a random child rank, SIGKILL of the launching process (rank 0), SIGKILL of a random
rank while last.ckpt is written, and SIGTERM to every rank (as a scheduler sends it). After a SIGKILL every
other rank must stop by itself within ``--bound`` seconds with exit status 3 (``training.ranks``; a rank that
its launching process reaps is only checked to be gone), after a SIGTERM with 143. The reference is the
uninterrupted N-rank run. ``--alternate`` resumes alternately under 1 and N ranks (the last launch under N):
no bit-equality then (another number of ranks re-shards the particles and re-seeds the generators), but the
final checkpoint must hold every datum's particles exactly once and the whole pool, all finite. ``--kills K``
stops after K stops (kinds in turn, so each occurs) instead of after ``--duration`` seconds, each timed stop
landing up to ``--window`` seconds after the launch trains and has a last.ckpt (so every later launch resumes); with
``--alternate`` it runs no reference.
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

from benchmarks import soak_ranks
from tests.helpers.checkpoints import differences, training_state

ROOT = Path(__file__).resolve().parents[1]

KINDS = ("SIGKILL at random", "SIGKILL mid-write", "SIGTERM")
RANK_KINDS = ("SIGKILL a rank", "SIGKILL the launcher", "SIGKILL mid-write", "SIGTERM")
EXIT_RANK_LOST, EXIT_SIGTERM = 3, 128 + signal.SIGTERM


class Heartbeat(pl.Callback):
    """Writes the optimizer step to ``path`` (atomically) after every training batch."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if not trainer.is_global_zero:
            return
        tmp = Path(f"{self.path}.tmp")
        tmp.write_text(str(trainer.global_step))
        os.replace(tmp, self.path)


@dataclass
class Soak:
    """What the soak saw: per kind of stop, the number of kills and the steps lost by each survived kill (a
    kill is survived when last.ckpt then loads, or when there was none yet and the next launch starts afresh)."""

    kinds: tuple[str, ...] = KINDS
    kills: dict[str, int] = field(default_factory=dict)
    lost: dict[str, list[int]] = field(default_factory=dict)
    launches: int = 0
    resumes: dict[int, int] = field(default_factory=dict)  # resumed launches by number of ranks
    stop_s: list[float] = field(default_factory=list)  # DDP: seconds from a stop until every rank was gone
    failures: list[str] = field(default_factory=list)  # DDP: ranks that did not stop as they must

    def __post_init__(self) -> None:
        self.kills = dict.fromkeys(self.kinds, 0)
        self.lost = {k: [] for k in self.kinds}


def overrides(args: argparse.Namespace, run: Path, devices: int = 1) -> list[str]:
    ddp = ["trainer=ddp_cpu", f"trainer.devices={devices}"] if args.devices > 1 else []
    return [*ddp,
        "debug=fast", "trainer.accelerator=cpu", "logger=csv", "~callbacks.gallery", "test=false",
        f"trainer.max_steps={args.max_steps}", f"callbacks.model_checkpoint.every_n_train_steps={args.every}",
        f"sampler.negative.pool_size={args.pool_size}", "+trainer.enable_progress_bar=false",
        "+callbacks.heartbeat._target_=benchmarks.soak.Heartbeat", f"+callbacks.heartbeat.path={run}.heartbeat",
        f"hydra.run.dir={run}", *args.overrides,
    ]


def launch(args: argparse.Namespace, run: Path, resume: bool, devices: int = 1) -> subprocess.Popen:
    Path(f"{run}.heartbeat").unlink(missing_ok=True)
    extra = [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"] if resume else []
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(f"{run}.log", "a") as log:
        return subprocess.Popen(
            [sys.executable, "train.py", *overrides(args, run, devices), *extra], cwd=ROOT, stdout=log,
            stderr=subprocess.STDOUT, env=env,
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
    proc = launch(args, run, resume=False, devices=args.devices)
    wait_until(lambda: heartbeat(run) is not None, proc)
    startup = time.monotonic() - t0
    if proc.wait() != 0:
        sys.exit(f"the reference run failed; see {run}.log")
    soak_ranks.reap()
    return run / "checkpoints" / "last.ckpt", time.monotonic() - t0, startup


def soak(args: argparse.Namespace, work: Path, startup: float, rng: random.Random) -> tuple[Soak, Path, float]:
    run = work / "soak"
    last = run / "checkpoints" / "last.ckpt"
    seen = Soak(kinds=RANK_KINDS if args.devices > 1 else KINDS)
    weights = (1.0 - args.write_kills - args.sigterms, args.write_kills, args.sigterms)
    weights = (weights[0] / 2, weights[0] / 2, *weights[1:]) if args.devices > 1 else weights
    t0 = time.monotonic()
    while True:
        leftovers = set(last.parent.glob(".last.ckpt.*.tmp"))  # left by a kill during a write
        stops = sum(seen.kills.values())
        devices = 1 if args.alternate and seen.launches % 2 else args.devices
        done_killing = stops >= args.kills if args.kills is not None else time.monotonic() - t0 > args.duration
        devices = args.devices if done_killing else devices
        if last.is_file():
            seen.resumes[devices] = seen.resumes.get(devices, 0) + 1
        proc = launch(args, run, resume=last.is_file(), devices=devices)
        seen.launches += 1
        if done_killing:
            if proc.wait() != 0:
                sys.exit(f"the final launch failed; see {run}.log")
            soak_ranks.reap()
            return seen, last, time.monotonic() - t0
        if args.kills is not None:  # each kind in turn
            kind = seen.kinds[stops % len(seen.kinds)]
        else:
            kind = rng.choices(seen.kinds, weights=weights)[0]
        ranks = soak_ranks.wait_for_ranks(proc, devices) if devices > 1 else {}
        if kind == "SIGKILL mid-write":
            # Wait for training to run, then for the next write of last.ckpt to begin.
            alive = wait_until(lambda: heartbeat(run) is not None, proc) and wait_until(
                lambda old=leftovers: bool(set(last.parent.glob(".last.ckpt.*.tmp")) - old), proc)
        elif args.kills is not None:
            # Counted stops land once this launch trains and the run has a checkpoint: every later launch resumes.
            alive = wait_until(lambda: heartbeat(run) is not None and last.is_file(), proc)
            deadline = time.monotonic() + rng.uniform(0.0, args.window)
            alive = alive and wait_until(lambda end=deadline: time.monotonic() > end, proc)
        else:
            deadline = time.monotonic() + rng.uniform(0.5 * startup, startup + args.window)
            alive = wait_until(lambda end=deadline: time.monotonic() > end, proc)
        if not alive:  # the launch ended by itself: finished, or failed
            soak_ranks.reap()
            if proc.returncode != 0:
                sys.exit(f"a launch failed (status {proc.returncode}); see {run}.log")
            return seen, last, time.monotonic() - t0
        done = heartbeat(run)
        if devices > 1:
            stop_ranks(seen, kind, proc, ranks, done is not None, args.bound, rng)
        else:
            proc.send_signal(signal.SIGTERM if kind == "SIGTERM" else signal.SIGKILL)
            rc = proc.wait()
            # Once training runs, SIGTERM must save and exit 143; during start-up it simply ends the process.
            if kind == "SIGTERM" and done is not None and rc != EXIT_SIGTERM:
                sys.exit(f"SIGTERM ended a training launch with status {rc}, expected 143; see {run}.log")
        seen.kills[kind] += 1
        try:
            saved = checkpoint_step(last) if last.is_file() else 0
        except Exception:  # a half-written or corrupt last.ckpt: the failure this soak looks for
            continue
        seen.lost[kind].append(max(0, (done if done is not None else saved) - saved))


def stop_ranks(seen: Soak, kind: str, proc: subprocess.Popen, ranks: dict[int, int], training: bool, bound: float,
               rng: random.Random) -> None:
    """Stop one rank of a DDP launch (``kind``) and check how the others stop: exit 3 after a SIGKILL (where this
    process can read the status), 143 after a SIGTERM once training runs, all within ``bound`` seconds."""
    if kind == "SIGTERM":
        victim, signum, expected = -1, signal.SIGTERM, EXIT_SIGTERM
    else:
        victim = {"SIGKILL a rank": rng.choice(sorted(ranks)) if ranks else 0, "SIGKILL the launcher": 0}.get(
            kind, rng.choice([0, *sorted(ranks)]))
        signum, expected = signal.SIGKILL, EXIT_RANK_LOST
    ended = soak_ranks.stop(proc, ranks, victim, signum, bound)
    seen.stop_s.append(ended.seconds)
    for rank, status in ended.statuses.items():
        if status == "hung" or (training and status is not None and status != expected):
            seen.failures.append(f"{kind}: {rank} ended with {status}, expected {expected}")


def check_whole(last: Path) -> list[str]:
    """What is missing from the final checkpoint: every datum's particles exactly once ([N, K, dz], N the run's
    n_data, no NaN row: ``gather_rows`` leaves rows no rank owned NaN) and the whole pool ([M, dx + dz], finite)."""
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    particles, pool = ckpt["lvebm"]["particles"], ckpt["callbacks"]["NegativePool"]["pool"]
    problems = []
    if particles.shape[0] != ckpt["hyper_parameters"]["n_data"] or not bool(torch.isfinite(particles).all()):
        problems.append(f"particles {list(particles.shape)}, {int((~torch.isfinite(particles)).sum())} non-finite")
    config_pool = ckpt["config"]["sampler"]["negative"]["pool_size"]
    if pool.shape[0] != config_pool or not bool(torch.isfinite(pool).all()):
        problems.append(f"pool {list(pool.shape)} of {config_pool}, {int((~torch.isfinite(pool)).sum())} non-finite")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of killing and resuming")
    parser.add_argument("--kills", type=int, default=None, help="stop after this many stops instead (kinds in turn)")
    parser.add_argument("--max-steps", type=int, default=600, help="trainer.max_steps of both runs")
    parser.add_argument("--every", type=int, default=20, help="checkpoint interval (optimizer steps)")
    parser.add_argument("--pool-size", type=int, default=500_000, help="negative pool M (a larger pool makes "
                        "checkpoint writes longer, easier to hit)")
    parser.add_argument("--devices", type=int, default=1, help="ranks (> 1: DDP on gloo, trainer=ddp_cpu)")
    parser.add_argument("--alternate", action="store_true", help="resume alternately under 1 and --devices ranks")
    parser.add_argument("--bound", type=float, default=60.0, help="DDP: seconds within which every other rank "
                        "must stop after one is killed")
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
    if args.alternate and args.devices < 2:
        parser.error("--alternate needs --devices 2 or more")
    work = args.work / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True)
    rng = random.Random(args.seed)
    if args.devices > 1:
        soak_ranks.become_subreaper()

    # --alternate compares no state with a reference run; --kills times its stops from the run's first checkpoint.
    if args.alternate and args.kills is not None:
        reference, reference_s, startup = None, float("nan"), float("nan")
    else:
        reference, reference_s, startup = run_reference(args, work)
    seen, last, soak_s = soak(args, work, startup, rng)
    diffs = [] if reference is None else differences(training_state(last), training_state(reference))
    missing = check_whole(last)
    leftovers = list(last.parent.glob(".*.tmp"))

    ranks = f"{args.devices} ranks" + (" and 1, alternately" if args.alternate else "") if args.devices > 1 else "1"
    print(f"soak: {soak_s:.0f} s, {seen.launches} launches ({ranks}), max_steps {args.max_steps}, checkpoint every "
          f"{args.every} steps, pool {args.pool_size}, work folder {work}")
    resumes = ", ".join(f"{n} under {d} rank(s)" for d, n in sorted(seen.resumes.items()))
    print(f"resumes from last.ckpt: {sum(seen.resumes.values())} ({resumes or 'none'})")
    print(f"{'stop':<22}{'kills':>7}{'survived':>10}{'lost mean':>11}{'lost max':>10}{'limit':>7}{'max/limit':>11}")
    for kind in seen.kinds:
        lost = seen.lost[kind]
        limit = 0 if kind == "SIGTERM" else args.every
        ratio = f"{max(lost) / limit:.2f}" if lost and limit else "-"
        mean = f"{sum(lost) / len(lost):.1f}" if lost else "-"
        print(f"{kind:<22}{seen.kills[kind]:>7}{len(lost):>10}{mean:>11}{max(lost, default=0):>10}{limit:>7}"
              f"{ratio:>11}")
    if args.devices > 1:
        print(f"every other rank stopped after a stop within {max(seen.stop_s, default=0):.1f} s (bound "
              f"{args.bound:.0f} s); ranks that did not stop as they must: {len(seen.failures)}")
        for failure in seen.failures:
            print(f"  {failure}")
    print(f"leftover temporary files at the end: {len(leftovers)}")
    if reference is None:
        print(f"wall time: soaked {soak_s:.0f} s (no reference run)")
    else:
        print(f"wall time: reference {reference_s:.0f} s, soaked {soak_s:.0f} s (x{soak_s / reference_s:.2f}); "
              f"start-up {startup:.1f} s a launch")
    print(f"final checkpoint holds every datum's particles once and the whole pool, all finite: "
          f"{'yes' if not missing else 'NO (' + '; '.join(missing) + ')'}")
    if not args.alternate:
        same = "yes" if not diffs else f"NO ({', '.join(diffs[:5])})"
        print(f"final parameters, particles, pool, generators, optimizer, scheduler, data order equal the "
              f"uninterrupted {args.devices}-rank run's bit for bit: {same}")
    survived = all(len(seen.lost[k]) == seen.kills[k] for k in seen.kinds)
    bounded = all(max(seen.lost[k], default=0) <= (0 if k == "SIGTERM" else args.every) for k in seen.kinds)
    ok = survived and bounded and not diffs and not missing and not leftovers and not seen.failures
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
