"""DDP scaling of LVEBM training: throughput on 1, 2, ... ranks, measured in one run of this script.

    python -m benchmarks.ddp_scaling                                   # CPU: 1 and 2 processes (gloo)
    python -m benchmarks.ddp_scaling --accelerator gpu --devices 1,2,4,8

Weak scaling, as DDP trains: every rank keeps its batch of B data and B_n negative pairs, so W ranks process
W B data a step. For each W the script starts a fresh ``--worker`` process (Lightning starts ranks 1..W-1 by
re-running its command line), trains ``--warmup`` steps untimed and ``--steps`` timed steps of the default
config (or the overrides given), and reports, over all ranks:

    data/s            = steps W B / t
    particle-steps/s  = steps W (B K T_z + B_n T_n) / t        (Langevin updates of single particles)
    efficiency        = throughput(W) / (W throughput(1))

On CPU each process gets ``--threads`` threads (default 1), so the efficiency is that of adding cores.
Validation, checkpoints and loggers are off: this measures the training step (both particle systems, the
parameter step and DDP's gradient all-reduce). The report, with the dense-matmul rate of this process's device,
goes to a new file in ``benchmarks/results/ddp_scaling/``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from benchmarks.common import ROOT, Report, RunTimer, machine, matmul_gflops, report_path
from lvebm_lightning.training.run import build_model


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
    timer = RunTimer(args.warmup)  # DDP's gradient all-reduce keeps the ranks in lock-step: rank 0's clock times all
    trainer = instantiate(
        cfg.trainer, callbacks=[instantiate(cfg.callbacks.negative_pool), timer], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0,
    )
    trainer.fit(model, datamodule=datamodule)
    if trainer.is_global_zero:
        per_rank = cfg.data.batch_size * cfg.sampler.posterior.n_particles * cfg.sampler.posterior.n_steps
        per_rank += cfg.sampler.negative.batch_size * cfg.sampler.negative.n_steps
        result = {
            "world": world, "steps": len(timer.steps), "seconds": timer.window_s, "threads": torch.get_num_threads(),
            "data_per_step": world * cfg.data.batch_size, "particle_steps_per_step": world * per_rank,
        }
        Path(args.out).write_text(json.dumps(result))


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
    device = "cuda" if args.accelerator == "gpu" else "cpu"
    gflops = matmul_gflops(device)
    with tempfile.TemporaryDirectory() as tmp:
        for world in worlds:
            out = Path(tmp) / f"world{world}" / "result.json"
            out.parent.mkdir(parents=True)
            command = [
                sys.executable, "-m", "benchmarks.ddp_scaling", "--worker", str(world), "--out", str(out),
                "--accelerator", args.accelerator, "--steps", str(args.steps), "--warmup", str(args.warmup),
                "--threads", str(args.threads), *args.overrides,
            ]
            proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"the run on {world} rank(s) failed:\n{proc.stderr[-3000:]}")
            results.append(json.loads(out.read_text()))
    base = next(r for r in results if r["world"] == 1)
    base_rate = base["steps"] * base["data_per_step"] / base["seconds"]
    rows = []
    for r in results:
        per_second = r["steps"] / r["seconds"]
        data_rate = per_second * r["data_per_step"]
        efficiency = data_rate / (r["world"] * base_rate)
        rows.append((r["world"], r["threads"], f"{1 / per_second:.4f}", f"{data_rate:,.0f}",
                     f"{per_second * r['particle_steps_per_step']:,.0f}", f"{efficiency:.2f}"))
    with Report(report_path("ddp_scaling", device)) as report:
        report.line(machine(device, [gflops]))
        report.line(f"# DDP scaling on {args.accelerator}, weak scaling, {args.steps} timed steps after {args.warmup}; "
                    f"overrides: {' '.join(args.overrides) or 'none'}")
        report.table(("ranks", "threads/rank", "s/step", "data/s", "particle-steps/s", "efficiency"), rows)


if __name__ == "__main__":
    main()
