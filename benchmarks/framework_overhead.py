"""Framework overhead: one training step of the default experiment under Lightning against a plain PyTorch loop.

Both run the same algorithm with the same settings (docs/design.md section 1, the defaults of ``conf/``): K = 1 MALA
posterior particle per datum (T_z = 10), a batch of the pool moved by T_n = 50 MALA steps with re-initialisation
rho, the loss mean E_pos - mean E_neg + alpha (mean E_pos^2 + mean E_neg^2), one backward, gradient clipping,
Adam and the cosine schedule. The Lightning side is ``train.py``'s own path (``training.train`` with the run's
callbacks and a CSV logger, validation and checkpoints off); the plain side is a hand-written loop over the same
energy, particle store and Langevin kernel. Steps per second are timed over the same window of steps (after a
warm-up), the two sides interleaved ``--repeats`` times, best of each, so a burst of load hits both alike. The
dense-matmul rate is measured in the same run. Target: Lightning / plain >= 0.95 (overhead <= 5%).

    python benchmarks/framework_overhead.py [--steps 300] [--warmup 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.speed import matmul_gflops  # noqa: E402
from lvebm_lightning.config.compose import compose_config  # noqa: E402
from lvebm_lightning.energies import MLPEnergy  # noqa: E402
from lvebm_lightning.langevin import LangevinConfig, langevin  # noqa: E402
from lvebm_lightning.particles import conditional_langevin  # noqa: E402
from lvebm_lightning.particles.store import ParticleStore  # noqa: E402
from lvebm_lightning.training.run import train  # noqa: E402
from lvebm_lightning.training.schedule import warmup_cosine  # noqa: E402


class StepTimer(pl.Callback):
    """Writes to ``out`` (JSON) the steps per second from the start of step ``warmup`` to the end of the last step,
    and the median time of a step split at the batch's end: batch start to batch end (``training_step``: the
    chains, the loss, the backward, the optimizer, the guard, and the ``train/*`` scalars on the steps that log
    them) and batch end to the next batch's start (Lightning's loop: its logging of those scalars, the fetch of the
    next batch, the hooks), each for the steps Lightning writes logs on and for the others."""

    def __init__(self, warmup: int, out: str) -> None:
        self.warmup, self.out, self.start = warmup, Path(out), 0.0
        self.steps: list[tuple[bool, float, float]] = []  # (logged, batch start, batch end)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()
        if trainer.global_step >= self.warmup:
            self.steps.append((bool(trainer._logger_connector.should_update_logs), time.perf_counter(), 0.0))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.steps and self.steps[-1][2] == 0.0:
            self.steps[-1] = (*self.steps[-1][:2], time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        end = time.perf_counter()
        split: dict[str, list[float]] = {key: [] for key in SPLIT}
        for (logged, start, stop), (_, next_start, _) in zip(self.steps, self.steps[1:]):
            kind = "logged" if logged else "other"
            split[f"Lightning step, {kind}"].append(next_start - start)
            split[f"  batch start to batch end, {kind}"].append(stop - start)
            split[f"  batch end to next batch start, {kind}"].append(next_start - stop)
        medians = {key: statistics.median(v) if v else math.nan for key, v in split.items()}
        rate = (trainer.global_step - self.warmup) / (end - self.start)
        self.out.write_text(json.dumps({"rate": rate, "medians": medians}))


SPLIT = tuple(f"{part}, {kind}" for kind in ("other", "logged") for part in (
    "Lightning step", "  batch start to batch end", "  batch end to next batch start"))


def lightning_rate(steps: int, warmup: int) -> dict:
    """Steps per second and the median split of a step (``StepTimer``) of ``train.py``'s own path."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(Path(tmp) / "run", [
            f"trainer.max_steps={steps}", "trainer.val_check_interval=1000000", "test=false", "logger=csv",
            "~callbacks.gallery", "~callbacks.metrics", "~callbacks.best_checkpoint",
            "callbacks.model_checkpoint.every_n_train_steps=1000000", "+trainer.enable_progress_bar=false",
            "+callbacks.timer._target_=benchmarks.framework_overhead.StepTimer", f"+callbacks.timer.warmup={warmup}",
            f"+callbacks.timer.out={tmp}/rate.json",
        ])
        train(cfg)
        return json.loads((Path(tmp) / "rate.json").read_text())


def default_compile() -> bool:
    """``sampler.compile`` of the default config, so that both loops run the same chains."""
    with tempfile.TemporaryDirectory() as tmp:
        return bool(compose_config(Path(tmp) / "run", []).sampler.compile)


def plain_rate(steps: int, warmup: int, compiled: bool, seed: int = 0) -> tuple[float, float]:
    """The same algorithm as a hand-written loop (double well, dx = 2, dz = 1, the defaults of conf/): steps per
    second and the median step time."""
    from lvebm_lightning.data.systems import get_dataset

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x_all = torch.from_numpy(get_dataset("double_well").sample(20000, seed))
    x_all = (x_all - x_all.mean(0)) / x_all.std(0)
    dx, dz, n, batch, pool_size, rho, alpha = 2, 1, len(x_all), 256, 10000, 0.01, 0.01
    energy = MLPEnergy(dx, dz, width=128, depth=2, gamma=0.1)
    store = ParticleStore(n, 1, dz)
    store.init_(gen)
    pool = torch.randn(pool_size, dx + dz, generator=gen)
    posterior = LangevinConfig(0.01, 10, kernel="mala", compile=compiled)
    negative = LangevinConfig(0.01, 50, kernel="mala", compile=compiled)
    opt = torch.optim.Adam(energy.parameters(), lr=1e-3, betas=(0.0, 0.999))
    sched = warmup_cosine(opt, total_steps=steps)

    def joint(xz: torch.Tensor) -> torch.Tensor:
        return energy(xz[..., :dx], xz[..., dx:])

    order = torch.randperm(n, generator=gen)
    start = None
    stamps = []
    for step in range(steps):
        if step == warmup:
            start = time.perf_counter()
        if step >= warmup:
            stamps.append(time.perf_counter())
        index = order[(step * batch) % (n - batch):][:batch]
        x = x_all[index]
        z = conditional_langevin(energy, x, store.get(index), posterior, gen)
        store.set(index, z)
        if step % (pool_size // batch) == 0:  # the pool's batches walk one permutation, as NegativePool's do
            pool_order = torch.randperm(pool_size, generator=gen)
        idx = pool_order[(step % (pool_size // batch)) * batch:][:batch]
        fresh = torch.randn(batch, dx + dz, generator=gen)
        xz = torch.where(torch.rand(batch, 1, generator=gen) < rho, fresh, pool[idx])
        xz, _ = langevin(joint, xz, negative, gen)
        pool[idx] = xz
        e_pos, e_neg = energy(x.unsqueeze(1), z), joint(xz)
        loss = e_pos.mean() - e_neg.mean() + alpha * ((e_pos**2).mean() + (e_neg**2).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(energy.parameters(), 1.0)
        opt.step()
        sched.step()
    end = time.perf_counter()
    step_times = [b - a for a, b in zip(stamps, [*stamps[1:], end])]
    return (steps - warmup) / (end - start), statistics.median(step_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    compiled = default_compile()
    rates: dict[str, list[float]] = {"lightning": [], "plain": []}
    plain_medians, lightning_medians = [], []
    gflops = []
    for _ in range(args.repeats):
        gflops.append(matmul_gflops("cpu"))
        rate, median = plain_rate(args.steps, args.warmup, compiled)
        rates["plain"].append(rate)
        plain_medians.append(median)
        run = lightning_rate(args.steps, args.warmup)
        rates["lightning"].append(run["rate"])
        lightning_medians.append(run["medians"])
    best = {k: max(v) for k, v in rates.items()}
    print(f"# torch {torch.__version__}, threads={torch.get_num_threads()}, dense matmul "
          f"{min(gflops):.0f}-{max(gflops):.0f} GFLOP/s (2048^2 float32, this run)")
    print(f"# default experiment (double well, MLP 128 x 2, B = 256, T_z = 10, T_n = 50 MALA, sampler.compile="
          f"{compiled} on both sides), steps {args.warmup}..{args.steps}, best of {args.repeats} interleaved runs")
    print(f"{'loop':<10} {'steps/s (best)':>15} {'all runs':>28}")
    for key in ("plain", "lightning"):
        print(f"{key:<10} {best[key]:>15.2f} {', '.join(f'{r:.2f}' for r in rates[key]):>28}")
    print(f"lightning / plain = {best['lightning'] / best['plain']:.3f} (target >= 0.95)")
    # Where Lightning's extra time goes: median times of the run with the best rate on each side.
    plain_ms = 1e3 * plain_medians[rates["plain"].index(best["plain"])]
    medians = lightning_medians[rates["lightning"].index(best["lightning"])]
    every = trainer_log_every()
    print(f"\nmedian step time, ms (each loop's best run; Lightning writes the train/* scalars every {every}th step)")
    print(f"{'plain loop, step':<48} {plain_ms:>8.2f}")
    for key in SPLIT:
        print(f"{key:<48} {1e3 * medians[key]:>8.2f}")


def trainer_log_every() -> int:
    """``trainer.log_every_n_steps`` of the default config."""
    with tempfile.TemporaryDirectory() as tmp:
        return int(compose_config(Path(tmp) / "run", []).trainer.log_every_n_steps)


if __name__ == "__main__":
    main()
