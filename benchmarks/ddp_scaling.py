"""DDP scaling of LVEBM training: throughput on 1, 2, ... ranks, measured in one run of this script.

    python benchmarks/ddp_scaling.py                                   # CPU: 1 and 2 processes (gloo)
    python benchmarks/ddp_scaling.py --accelerator gpu --devices 1,2,4,8

Weak scaling, as DDP trains: every rank keeps its batch of B data and B_n negative pairs, so W ranks process
W B data a step. For each W the script starts a fresh ``--worker`` process (Lightning starts ranks 1..W-1 by
re-running its command line), trains ``--warmup`` steps untimed and ``--steps`` timed steps of the default
config (or the overrides given), and reports, over all ranks:

    data/s            = steps W B / t
    particle-steps/s  = steps W (B K T_z + B_n T_n) / t        (Langevin updates of single particles)
    efficiency        = throughput(W) / (W throughput(1))

On CPU each process gets ``--threads`` threads (default 1), so the efficiency is that of adding cores.
Validation, checkpoints and loggers are off: this measures the training step (both particle systems, the
parameter step and DDP's gradient all-reduce).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[1]
# Benchmark the checkout this script sits in, not another installed copy of the package.
sys.path.insert(0, str(ROOT))
from lvebm_lightning.training.run import build_model  # noqa: E402  (needs the path above)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--devices", default="1,2", help="comma-separated numbers of ranks to time, e.g. 1,2,4")
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=1, help="threads per process on CPU")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml, e.g. data.batch_size=512")
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)  # W, inside one timed run
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    return parser.parse_args()


def worker(args: argparse.Namespace) -> None:
    """Train warmup + steps steps on ``args.worker`` ranks; rank 0 writes the timing to ``args.out``."""
    world = args.worker
    overrides = [
        f"trainer.accelerator={args.accelerator}", f"trainer.devices={world}",
        f"++trainer.strategy={'ddp' if world > 1 else 'auto'}", f"trainer.max_steps={args.warmup + args.steps}",
        f"paths.output_dir={Path(args.out).parent}", *args.overrides,
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    datamodule = instantiate(cfg.data).prepare()
    pl.seed_everything(int(cfg.seed), verbose=False)
    model = build_model(cfg, datamodule)
    timer = StepTimer(args.warmup, args.accelerator == "gpu")
    trainer = instantiate(
        cfg.trainer, callbacks=[instantiate(cfg.callbacks.negative_pool), timer], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0,
    )
    trainer.fit(model, datamodule=datamodule)
    if trainer.is_global_zero:
        per_rank = cfg.data.batch_size * cfg.sampler.posterior.n_particles * cfg.sampler.posterior.n_steps
        per_rank += cfg.sampler.negative.batch_size * cfg.sampler.negative.n_steps
        result = {
            "world": world, "steps": timer.timed_steps, "seconds": timer.seconds, "threads": torch.get_num_threads(),
            "data_per_step": world * cfg.data.batch_size, "particle_steps_per_step": world * per_rank,
        }
        Path(args.out).write_text(json.dumps(result))


class StepTimer(pl.Callback):
    """Wall time from the start of the first timed step to the end of the last (DDP's gradient all-reduce keeps
    the ranks in lock-step, so rank 0's clock times them all)."""

    def __init__(self, warmup: int, cuda: bool) -> None:
        self.warmup, self.cuda = warmup, cuda
        self.start: float | None = None
        self.seconds, self.timed_steps = 0.0, 0

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.warmup:
            self.start = self._now()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.start is not None:
            self.seconds = self._now() - self.start
            self.timed_steps = trainer.global_step - self.warmup


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    worlds = [int(w) for w in args.devices.split(",")]
    if 1 not in worlds:
        worlds = [1, *worlds]  # efficiency is relative to one rank
    env = {**os.environ, "WANDB_MODE": "disabled"}
    if args.accelerator == "cpu":
        env["OMP_NUM_THREADS"] = str(args.threads)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for world in worlds:
            out = Path(tmp) / f"world{world}" / "result.json"
            out.parent.mkdir(parents=True)
            command = [
                sys.executable, str(Path(__file__).resolve()), "--worker", str(world), "--out", str(out),
                "--accelerator", args.accelerator, "--steps", str(args.steps), "--warmup", str(args.warmup),
                "--threads", str(args.threads), *args.overrides,
            ]
            proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"the run on {world} rank(s) failed:\n{proc.stderr[-3000:]}")
            results.append(json.loads(out.read_text()))
    base = next(r for r in results if r["world"] == 1)
    base_rate = base["steps"] * base["data_per_step"] / base["seconds"]
    print(f"DDP scaling on {args.accelerator} ({os.cpu_count()} CPU cores visible), weak scaling, "
          f"{args.steps} timed steps after {args.warmup}; overrides: {' '.join(args.overrides) or 'none'}")
    columns = ("ranks", 5), ("threads/rank", 12), ("s/step", 8), ("data/s", 10), ("particle-steps/s", 17)
    header = " ".join(f"{name:>{width}}" for name, width in (*columns, ("efficiency", 10)))
    print(header)
    print("-" * len(header))
    for r in results:
        per_second = r["steps"] / r["seconds"]
        data_rate = per_second * r["data_per_step"]
        print(
            f"{r['world']:>5} {r['threads']:>12} {1 / per_second:>8.4f} {data_rate:>10,.0f} "
            f"{per_second * r['particle_steps_per_step']:>17,.0f} {data_rate / (r['world'] * base_rate):>10.2f}"
        )


if __name__ == "__main__":
    main()
