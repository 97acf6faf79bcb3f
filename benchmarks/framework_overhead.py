"""Framework overhead: one training step of the default experiment under Lightning against a plain PyTorch loop.

Both run the same algorithm with the same settings (docs/design.md section 1, the defaults of ``conf/``): K = 1 MALA
posterior particle per datum (T_z = 10), a batch of the pool moved by T_n = 50 MALA steps with re-initialisation
rho, the loss mean E_pos - mean E_neg + alpha (mean E_pos^2 + mean E_neg^2), one backward, gradient clipping,
Adam and the cosine schedule. The Lightning side is ``train.py``'s own path (``training.train`` with the run's
callbacks and a CSV logger, validation and checkpoints off; ``benchmarks.common.RunTimer`` stamps its steps); the
plain side is a hand-written loop over the same energy, particle store and Langevin kernel. Steps per second are
timed over the same window of steps (after a warm-up), the two sides interleaved ``--repeats`` times, best of
each, so a burst of load hits both alike. The dense-matmul rate is measured in the same run. Target: Lightning /
plain >= 0.95 (overhead <= 5%).

    python -m benchmarks.framework_overhead [--steps 300] [--warmup 50] [--repeats 3]

The report goes to a new file in ``benchmarks/results/framework_overhead/``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import Report, RunTimer, Step, machine, matmul_gflops, report_path
from lvebm_lightning.config.compose import compose_config
from lvebm_lightning.energies import MLPEnergy
from lvebm_lightning.langevin import LangevinConfig, langevin
from lvebm_lightning.particles import conditional_langevin
from lvebm_lightning.particles.store import ParticleStore
from lvebm_lightning.training.run import train
from lvebm_lightning.training.schedule import warmup_cosine

SPLIT = tuple(f"{part}, {kind}" for kind in ("other", "logged") for part in (
    "Lightning step", "  batch start to batch end", "  batch end to next batch start"))


def split_medians(steps: list[Step]) -> dict[str, float]:
    """The median time of a step split at the batch's end: batch start to batch end (``training_step``: the chains,
    the loss, the backward, the optimizer, the guard, and the ``train/*`` scalars on the steps that log them) and
    batch end to the next batch's start (Lightning's loop: its logging of those scalars, the fetch of the next
    batch, the hooks), each for the steps Lightning writes logs on and for the others."""
    split: dict[str, list[float]] = {key: [] for key in SPLIT}
    for step, following in zip(steps, steps[1:]):
        kind = "logged" if step.logged else "other"
        split[f"Lightning step, {kind}"].append(following.start - step.start)
        split[f"  batch start to batch end, {kind}"].append(step.end - step.start)
        split[f"  batch end to next batch start, {kind}"].append(following.start - step.end)
    return {key: statistics.median(v) if v else math.nan for key, v in split.items()}


def lightning_rate(steps: int, warmup: int) -> tuple[float, dict[str, float]]:
    """Steps per second from the start of step ``warmup`` to the end of training, and the median split of a step
    (``split_medians``), of ``train.py``'s own path."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(Path(tmp) / "run", [
            f"trainer.max_steps={steps}", "trainer.val_check_interval=1000000", "test=false", "logger=csv",
            "~callbacks.gallery", "~callbacks.metrics", "~callbacks.best_checkpoint",
            "callbacks.model_checkpoint.every_n_train_steps=1000000", "+trainer.enable_progress_bar=false",
            "+callbacks.timer._target_=benchmarks.common.RunTimer", f"+callbacks.timer.warmup={warmup}",
        ])
        RunTimer.runs.clear()
        train(cfg)
        (timer,) = RunTimer.runs
        return len(timer.steps) / (timer.finished - timer.steps[0].start), split_medians(timer.steps)


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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
        rate, medians = lightning_rate(args.steps, args.warmup)
        rates["lightning"].append(rate)
        lightning_medians.append(medians)
    best = {k: max(v) for k, v in rates.items()}
    # Where Lightning's extra time goes: median times of the run with the best rate on each side.
    plain_ms = 1e3 * plain_medians[rates["plain"].index(best["plain"])]
    medians = lightning_medians[rates["lightning"].index(best["lightning"])]
    with Report(report_path("framework_overhead")) as report:
        report.line(machine("cpu", gflops))
        report.line(f"# default experiment (double well, MLP 128 x 2, B = 256, T_z = 10, T_n = 50 MALA, "
                    f"sampler.compile={compiled} on both sides), steps {args.warmup}..{args.steps}, best of "
                    f"{args.repeats} interleaved runs")
        report.table(("loop", "steps/s (best)", "all runs"),
                     [(key, f"{best[key]:.2f}", ", ".join(f"{r:.2f}" for r in rates[key]))
                      for key in ("plain", "lightning")])
        report.line(f"lightning / plain = {best['lightning'] / best['plain']:.3f} (target >= 0.95)")
        report.line()
        report.line(f"median step time, ms (each loop's best run; Lightning writes the train/* scalars every "
                    f"{trainer_log_every()}th step)")
        parts = [(f"- {key.strip()}" if key.startswith("  ") else key, f"{1e3 * medians[key]:.2f}") for key in SPLIT]
        report.table(("part", "ms"), [("plain loop, step", f"{plain_ms:.2f}"), *parts])


def trainer_log_every() -> int:
    """``trainer.log_every_n_steps`` of the default config."""
    with tempfile.TemporaryDirectory() as tmp:
        return int(compose_config(Path(tmp) / "run", []).trainer.log_every_n_steps)


if __name__ == "__main__":
    main()
