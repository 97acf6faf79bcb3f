"""The method's claims in one table: every method on every physical system, mean and spread over seeds.

    python -m benchmarks.paper                          # the default size (budgets printed with the table)
    python -m benchmarks.paper --quick                  # every path on small budgets, in minutes (a CI test)
    python -m benchmarks.paper --datasets pendulum,phi4 --seeds 3 sampler.negative.n_steps=100

Methods, all through the same training loop (``train(cfg)`` on ``conf/train.yaml``) with the same budget:
``persistent`` (the method), ``short_run`` (fresh conditional chains every batch), ``amortised`` (a Gaussian
encoder), ``no_latent`` (``model.dz=0``), and ``flow``, a neural spline flow (zuko, the ``bench`` extra) fitted by
maximum likelihood. Each dataset takes the energy that suits it (README "Energies"): the MLP on the 2-D and 3-D
systems and on ``phi4`` (the convolutional energy, ``model/energy=conv``, costs ~50x more per step on a CPU),
the decoder energy with dz = 2 on ``pendulum``; everything else is the framework's defaults (compiled chains
included; ``--quick`` runs them eagerly). The scores (``paper_scores``), all on the test split:

    W2/floor        W2 of fresh long chains to the test data over the data floor (sliced W2 beside when dx > 3)
    NLL gap         exact test NLL (dx + dz <= 3, flows: any dx) minus the true density's
    FE spread       the free-energy error: std over test data of log p_model(x) - log p_true(x), in kT
                    (Boltzmann systems; the latent integrated out by quadrature)
    observable      phi4: TV of the magnetisation histogram (its sampling floor beside), two-point z-score;
                    pendulum: W1 of the trajectory-energy distribution over its floor; linear_gaussian: relative
                    error of the covariance against the exact ML covariance (floor: n training rows)
    ELBO gain       particle ELBO (K fresh chains per datum) minus the ELBO of a Gaussian encoder fitted to the same
                    frozen energy, nats per datum (> 0: the particle posterior is tighter). The persistent method's
                    chains start from its store's particles of the nearest training data (``infer(start=
                    "neighbours")``), the other methods' from N(0, I); the method's gain with chains from N(0, I)
                    is reported beside
    R^2             cross-validated k-NN R^2 of the hidden truth from the posterior mean (pendulum: its energy;
                    phi4: the sign of the magnetisation), beside the same probe on the amortised encoder's mean
                    and on the first dz principal components of x (row "pca")
    recon           lorenz63: z from (x, y); pendulum: the second half from the first; phi4: a 4 x 4 block.
                    RMSE of the mean, energy score, share of truths in the central 90% of the samples; row "knn":
                    a k-NN regression from observed to hidden coordinates fitted on the training data; row
                    "bayes" (pendulum, whose generator is known): the Bayes-optimal reconstruction and the R^2
                    of the hidden energy by its exact posterior mean, the limit no method beats on average
                    (``data.pendulum_posterior``). The flow reconstructs by MALA on its exact log density over
                    the hidden coordinates (``flow.flow_conditional``), started at the k-NN imputer's samples
    train s         wall time of the training steps alone

Runs are sequential in this process. Results go to ``benchmarks/results/paper/`` for the default run, to its
git-ignored ``quick/`` for a quick or partial one (``--quick``, a subset, other seeds or steps, overrides: never
over the default run's results), or to ``--out``: ``table.md`` (the tables), ``rows.json`` (every run's numbers;
``rows.partial.json`` while it runs, so that an interrupted run keeps what it finished) and
``gallery_<dataset>.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import hydra
import torch

from benchmarks import paper_scores as scores
from benchmarks import paper_sweeps as sweeps
from benchmarks.common import MATMUL_N, Report, RunTimer, matmul_gflops, results_dir
from benchmarks.flow import fit_flow, flow_nll, flow_sample
from benchmarks.paper_report import gallery, tables
from lvebm_lightning.config.compose import compose_config
from lvebm_lightning.inference import load, sample
from lvebm_lightning.metrics.evaluation import floor_distances, held_out_rows, reference_pairs, sample_distances
from lvebm_lightning.training.divergence import TrainingDiverged
from lvebm_lightning.training.run import train


@dataclass(frozen=True)
class Spec:
    """How a dataset is run: seeds, its energy, and the coordinates its reconstruction hides."""

    seeds: int
    overrides: tuple[str, ...] = ()
    dz: int = 1
    hidden: tuple[int, ...] = ()
    no_latent: tuple[str, ...] = ()  # what model.dz=0 also needs (the decoder energy needs a latent)


PHI4_BLOCK = tuple(r * 8 + c for r in range(2, 6) for c in range(2, 6))
DATASETS: dict[str, Spec] = {
    "double_well": Spec(seeds=3),
    "mueller_brown": Spec(seeds=1),
    "oscillator": Spec(seeds=1),
    "lorenz63": Spec(seeds=1, hidden=(2,)),
    "pendulum": Spec(seeds=3, overrides=("model/energy=decoder",), dz=2, hidden=tuple(range(8, 16)),
                     no_latent=("model/energy=mlp",)),
    "phi4": Spec(seeds=3, hidden=PHI4_BLOCK),  # the MLP: model/energy=conv costs ~50x more per step on a CPU
    "linear_gaussian": Spec(seeds=1),
}
METHODS: dict[str, tuple[str, ...]] = {
    "persistent": ("sampler=persistent",),
    "short_run": ("sampler=short_run",),
    "amortised": ("sampler=amortised",),
    "no_latent": ("model.dz=0",),
    "flow": (),
}


@dataclass(frozen=True)
class Budget:
    steps: int = 800           # optimizer steps per EBM run (the flow: flow_steps)
    chain_steps: int = 1000    # T of the long chains, posterior chains and reconstruction chains
    n_samples: int = 1000      # long-chain samples for W2 and the observables
    n_probe: int = 500         # test data probed for latents, ELBO and free energy
    n_particles: int = 32      # K fresh posterior chains per probed datum
    elbo_samples: int = 32     # S draws per datum for each ELBO
    encoder_data: int = 5000   # training data the fitted encoder sees
    encoder_steps: int = 2000  # its maximum steps (it stops earlier when its held-out ELBO stops rising)
    n_recon: int = 200         # test data reconstructed
    recon_samples: int = 50    # conditional samples per reconstructed datum
    flow_steps: int = 1000
    flow_chain_steps: int = 200  # the flow's conditional MALA after its warm-up of 4 x flow_chain_steps / 8 steps
    data: tuple[str, ...] = ()  # data-size overrides
    seeds: int | None = None   # seeds for every dataset (None: each dataset's own)


QUICK = Budget(
    steps=20, chain_steps=40, n_samples=256, n_probe=200, n_particles=4, elbo_samples=8, encoder_data=500,
    encoder_steps=60, n_recon=32, recon_samples=16, flow_steps=60, flow_chain_steps=16, seeds=1,
    data=("data.n_train=1500", "data.n_val=256", "data.n_test=512", "sampler.negative.pool_size=1000",
          "sampler.negative.n_steps=10",  # T_n 50 -> 10: the negative chains were most of a quick run's time
          "sampler.compile=false",  # 20-step runs: compiling each dataset's chain shapes would cost more than it saves
          "+callbacks.metrics.ais_chains=32", "+callbacks.metrics.ais_temperatures=20",
          "callbacks.metrics.n_elbo=64", "callbacks.metrics.elbo_samples=8", "callbacks.metrics.quadrature_points=32"),
)


SWEEP = replace(Budget(), chain_steps=500, n_particles=8)
"""The sweeps' budget: the paper's, with reconstruction chains of 500 steps from either start and 8 chains per
datum for the posterior mean that the R^2 probe reads."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny budgets: every path in a few minutes")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated subset of the datasets")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of the methods")
    parser.add_argument("--seeds", type=int, default=0, help="seeds per dataset (0: each dataset's own)")
    parser.add_argument("--steps", type=int, default=0, help="optimizer steps per EBM run (0: the budget's)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: benchmarks/results/paper/, its quick/ for a partial run)")
    parser.add_argument("--sweep", choices=sorted(sweeps.SWEEPS), default=None,
                        help="reconstruction as data or dimension grow (benchmarks/paper_sweeps.py), not the table")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every EBM run")
    args = parser.parse_args(argv)
    if args.sweep:
        args.methods = args.methods if args.methods != ",".join(METHODS) else sweeps.DEFAULT_METHODS[args.sweep]
        unknown = [m for m in args.methods.split(",") if m not in sweeps.METHODS]
        if unknown:
            parser.error(f"unknown method(s) {unknown} for --sweep; choose from {list(sweeps.METHODS)}")
        return args
    for name, chosen, valid in (("dataset", args.datasets, DATASETS), ("method", args.methods, METHODS)):
        unknown = [v for v in chosen.split(",") if v not in valid]
        if unknown:
            parser.error(f"unknown {name}(s) {unknown}; choose from {list(valid)}")
    return args


def is_partial(args: argparse.Namespace) -> bool:
    """Whether a run differs from the default run: quick budgets, a subset, other seeds or steps, or overrides."""
    methods = sweeps.DEFAULT_METHODS[args.sweep] if getattr(args, "sweep", None) else ",".join(METHODS)
    subset = args.datasets != ",".join(DATASETS) or args.methods != methods
    return args.quick or subset or bool(args.seeds or args.steps or args.overrides)


def output_dir(args: argparse.Namespace) -> Path:
    """``--out``, else ``benchmarks/results/paper/`` for the default run and its ``quick/`` for any other, so that
    only a default run replaces the default run's table, rows and galleries."""
    name = f"paper_{args.sweep}" if getattr(args, "sweep", None) else "paper"
    return args.out or results_dir(name, quick=is_partial(args))


def last_wins(overrides: list[str]) -> list[str]:
    """Overrides with one entry per key, that key's last value (Hydra refuses a key given twice)."""
    keyed = {o.split("=", 1)[0].lstrip("+~"): o for o in overrides}
    return list(keyed.values())


def run_overrides(
    dataset: str, method: str, seed: int, budget: Budget, extra: list[str],
    method_overrides: tuple[str, ...] | None = None,
) -> list[str]:
    """The Hydra overrides of one EBM run of the table (``method_overrides``: other than ``METHODS[method]``)."""
    spec = DATASETS[dataset]
    return last_wins([
        f"data={dataset}", *spec.overrides, f"model.dz={spec.dz}", *(method_overrides or METHODS[method]),
        *(spec.no_latent if method == "no_latent" else ()), f"seed={seed}", "logger=csv", "test=true",
        "~callbacks.gallery", "~callbacks.best_checkpoint", "+trainer.limit_val_batches=0",
        "+trainer.enable_progress_bar=false", "+callbacks.timer._target_=benchmarks.common.RunTimer",
        f"trainer.max_steps={budget.steps}", f"trainer.val_check_interval={budget.steps}",
        f"callbacks.model_checkpoint.every_n_train_steps={budget.steps}",
        f"sampler.long_chains.n_steps={budget.chain_steps}", f"sampler.long_chains.n_samples={budget.n_samples}",
        *budget.data, *extra,
    ])


def ebm_run(dataset: str, method: str, seed: int, budget: Budget, extra: list[str], out: Path) -> dict[str, Any]:
    """Train one EBM and score it; the row of the table."""
    spec = DATASETS[dataset]
    overrides = run_overrides(dataset, method, seed, budget, extra)
    RunTimer.runs.clear()
    start = time.perf_counter()
    try:
        metrics = train(compose_config(out, overrides))
    except TrainingDiverged as err:
        train_s = RunTimer.runs[0].busy_s if RunTimer.runs else math.nan
        return {"status": f"diverged: {str(err)[:120]}", "train_s": train_s}
    row: dict[str, Any] = {"status": "ok", "train_s": RunTimer.runs[0].busy_s}
    row.update({k.removeprefix("test/"): v for k, v in metrics.items() if k.startswith("test/")})
    model = load(out / "checkpoints" / "last.ckpt")
    data = model.run_data()
    x_model = torch.from_numpy(sample(model, budget.n_samples, seed=seed)).double()
    log_p = None  # the latent integrated out by quadrature: only where a true density is there to compare with
    if model.dz <= 2 and scores.is_boltzmann(data):
        log_p = scores.model_log_density(model, data.raw["test"][: budget.n_probe], seed)
    row.update(scores.physics_scores(data, x_model, log_p, budget))
    if model.dz > 0:
        row.update(scores.latent_scores(model, data, budget, seed))
    if spec.hidden:
        recon_start = time.perf_counter()
        row.update(scores.reconstruction_scores(model, data, budget, list(spec.hidden), seed))
        row["recon_s"] = time.perf_counter() - recon_start
    row["total_s"] = time.perf_counter() - start
    row["samples"] = x_model[:1000].float().tolist()
    return row


def flow_run(dataset: str, seed: int, budget: Budget, out: Path) -> dict[str, Any]:
    """Fit the flow on the same training split (the data module of a finished EBM run's config) and score it."""
    overrides = [f"data={dataset}", f"seed={seed}", *[o for o in budget.data if o.startswith("data.")]]
    data = hydra.utils.instantiate(compose_config(out, overrides).data).prepare()
    start = time.perf_counter()
    flow, mean, std = fit_flow(data.raw["train"], steps=budget.flow_steps, seed=seed)
    row: dict[str, Any] = {"status": "ok", "train_s": time.perf_counter() - start}
    test = data.raw["test"]
    nll = flow_nll(flow, mean, std, test)
    row["nll"] = float(nll.mean())
    if hasattr(data.system, "log_partition") and test.shape[1] <= 3:
        true = data.system.energy(test.double()) + data.system.log_partition()
        row["nll_true"], row["nll_gap"] = float(true.mean()), float(nll.mean() - true.mean())
    x_model = flow_sample(flow, mean, std, budget.n_samples, seed=seed).double()
    n = min(budget.n_samples, len(test))
    held = held_out_rows(test, n)  # the rows and floor pairs that the EBM rows' callback uses
    distances = sample_distances(x_model.float(), held, floor_distances(reference_pairs(held, data.raw["train"])))
    row.update({k: float(v) for k, v in distances.items()})
    row.update(scores.physics_scores(data, x_model, -nll[: budget.n_probe], budget))
    hidden = list(DATASETS[dataset].hidden)
    if hidden:
        recon_start = time.perf_counter()
        row.update(scores.flow_reconstruction(flow, mean, std, data.raw["train"], test[: budget.n_recon], hidden,
                                              budget, seed))
        row["recon_s"] = time.perf_counter() - recon_start
    row["total_s"] = time.perf_counter() - start
    row["samples"] = x_model[:1000].float().tolist()
    return row


def main() -> None:
    args = parse_args()
    budget = QUICK if args.quick else SWEEP if args.sweep else Budget()
    if args.seeds:
        budget = replace(budget, seeds=args.seeds)
    if args.steps:
        budget = replace(budget, steps=args.steps)
    os.environ.setdefault("WANDB_MODE", "disabled")
    out = output_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    if args.sweep:
        sweep_main(args, budget, out)
        return
    with tempfile.TemporaryDirectory() as tmp:  # the runs' checkpoints: scored, then deleted
        rows, refs, elapsed = run_all(args, budget, Path(tmp), out)
    with Report(out / "table.md") as report:
        report.line(budget_header(budget, args.datasets.split(","), args.overrides, elapsed))
        report.line()
        report.line(tables(rows, refs))
    for row in rows:
        row.pop("samples", None)
    (out / "rows.json").write_text(json.dumps({"budget": asdict(budget), "rows": rows, "references": refs}, indent=1))
    (out / "rows.partial.json").unlink(missing_ok=True)


def run_all(
    args: argparse.Namespace, budget: Budget, runs: Path, out: Path,
) -> tuple[list[dict], dict[str, dict], float]:
    """Every (dataset, seed, method) run in turn (checkpoints under ``runs``, the partial rows and the galleries
    in ``out``); the rows, the per-dataset references and the wall time."""
    datasets, methods = args.datasets.split(","), args.methods.split(",")
    rows: list[dict[str, Any]] = []
    refs: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    for dataset in datasets:
        spec = DATASETS[dataset]
        for seed in range(budget.seeds or spec.seeds):
            for method in methods:
                run_dir = runs / dataset / f"{method}_seed{seed}"
                t0 = time.perf_counter()
                if method == "flow":
                    row = flow_run(dataset, seed, budget, run_dir)
                else:
                    row = ebm_run(dataset, method, seed, budget, args.overrides, run_dir)
                rows.append({"dataset": dataset, "method": method, "seed": seed, **row})
                partial = [{k: v for k, v in r.items() if k != "samples"} for r in rows]  # kept if interrupted
                (out / "rows.partial.json").write_text(json.dumps({"budget": asdict(budget), "rows": partial}))
                print(f"[{time.perf_counter() - start:7.0f} s] {dataset:15s} {method:10s} seed {seed}: "
                      f"{row['status']} ({time.perf_counter() - t0:.0f} s)", flush=True)
            if seed == 0:
                model = load(runs / dataset / "persistent_seed0" / "checkpoints" / "last.ckpt") \
                    if "persistent" in methods else None
                data = model.run_data() if model is not None else None
                if data is not None:
                    refs[dataset] = scores.reference_scores(data, budget, list(spec.hidden), spec.dz)
                    gallery(dataset, data, [r for r in rows if r["dataset"] == dataset], out / f"gallery_{dataset}.png")
    return rows, refs, time.perf_counter() - start


def sweep_main(args: argparse.Namespace, budget: Budget, out: Path) -> None:
    """``--sweep NAME``: every variant of the sweep, its table and rows (``paper_sweeps``)."""
    variants = (sweeps.QUICK_SWEEPS if args.quick else sweeps.SWEEPS)[args.sweep]
    with tempfile.TemporaryDirectory() as tmp:
        report = sweeps.run_sweep(args.sweep, variants, args.methods.split(","), budget, args.overrides, Path(tmp),
                                  out)
    with Report(out / "table.md") as table:
        table.line(
            f"Sweep {args.sweep}: {budget.steps} optimizer steps per EBM run, flow {budget.flow_steps} steps; "
            f"{budget.n_recon} test rows reconstructed x {budget.recon_samples} samples by chains of "
            f"{budget.chain_steps} steps; R² on {budget.n_probe} test rows (K = {budget.n_particles}).  \n"
            f"Seeds per variant and method: {budget.seeds or 1}. Overrides: "
            f"{' '.join([*budget.data, *args.overrides]) or 'none'}.  \n"
            f"Total wall time {report['wall_s'] / 60:.1f} min on {os.cpu_count()} CPU cores (dense matmul "
            f"{matmul_gflops('cpu'):.0f} GFLOP/s, {MATMUL_N}^2 float32, at the end of this run).")
        table.line()
        table.line(sweeps.sweep_table(report))
    (out / "rows.json").write_text(json.dumps(report, indent=1))
    (out / "rows.partial.json").unlink(missing_ok=True)


def budget_header(budget: Budget, datasets: list[str], overrides: list[str], elapsed: float) -> str:
    seeds = ", ".join(f"{d} {budget.seeds or DATASETS[d].seeds}" for d in datasets)
    rate = matmul_gflops("cpu")
    return (
        f"Budgets: {budget.steps} optimizer steps per EBM run, flow {budget.flow_steps} steps; long chains "
        f"T = {budget.chain_steps} with {budget.n_samples} samples; {budget.n_probe} test data probed "
        f"(K = {budget.n_particles} chains, S = {budget.elbo_samples}); fitted encoder <= {budget.encoder_steps} steps "
        f"on {budget.encoder_data} data; {budget.n_recon} reconstructions x {budget.recon_samples} samples.  \n"
        f"Seeds: {seeds}. Overrides: {' '.join([*budget.data, *overrides]) or 'none'}.  \n"
        f"Total wall time {elapsed / 60:.1f} min on {os.cpu_count()} CPU cores (dense matmul {rate:.0f} GFLOP/s, "
        f"{MATMUL_N}^2 float32, at the end of this run)."
    )


if __name__ == "__main__":
    main()
