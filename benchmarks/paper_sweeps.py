"""Conditional generation as the training set grows and as the dimension grows: ``paper.py --sweep NAME``.

    python -m benchmarks.paper --sweep ladder       # pendulum from 500 to 20000 training trajectories
    python -m benchmarks.paper --sweep dimension    # pendulum of 32, 64 observation times; phi4 8 x 8, 16 x 16
    python -m benchmarks.paper --sweep ladder --quick

Every variant of a sweep is one data set (validation and test splits unchanged) whose hidden coordinates are
reconstructed from the rest on ``n_recon`` test rows, ``recon_samples`` samples each, with the sweeps' budget
(``paper.SWEEP``: the paper's 800 optimizer steps, chains of 500 steps; the EBMs skip the test split's long chains):

    collapsed   the method (``sampler=persistent``), z | x_o with x_m integrated out, x_m | z drawn exactly
                (decoder energy; on phi4 the MLP energy has no closed form and this is the joint chain)
    joint       the method with ``sampler.collapsed=false``: Langevin on (x_m, z) (decoder energies only)
    no_latent   the latent-free EBM (``model.dz=0``): Langevin on x_m
    amortised   the Gaussian-encoder baseline (its encoder's draws start its chains)
    flow        a neural spline flow sampled conditionally by MALA on its exact log density, started at the
                k-NN imputer's samples (``flow.flow_conditional``); up to ``FLOW_MAX_DIM`` coordinates
    knn         the hidden values of the nearest training rows in the observed coordinates (mean of 10 for RMSE)
    bayes       pendulum only: the Bayes-optimal reconstruction by quadrature over the generator's hidden energy and
                phase (``data.pendulum_posterior``), the limit no method beats on average

Each EBM's chains run twice, from the store's (or encoder's) starts (``neighbours``) and from N(0, I)
(``prior``); both are reported. Columns: training seconds, reconstruction seconds, RMSE of the mean (and its
ratio to k-NN's and to the Bayes optimum's), energy score, the share of truths in the central 90% of the samples,
and on the pendulum the cross-validated R^2 of the hidden energy from the posterior mean (``r2_posterior``; the
encoder's mean beside for ``amortised``; PCA and the Bayes ceiling in the reference rows). Results go to
``benchmarks/results/paper_<sweep>/`` (``quick/`` for a quick or partial run): ``table.md`` and ``rows.json``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch

from benchmarks import paper_scores as scores
from benchmarks.common import RunTimer, markdown_table
from benchmarks.flow import fit_flow
from benchmarks.paper_report import summary
from lvebm_lightning.config.compose import compose_config
from lvebm_lightning.inference import infer, load, reconstruct
from lvebm_lightning.metrics.reconstruction import cv_knn_r2
from lvebm_lightning.training.divergence import TrainingDiverged
from lvebm_lightning.training.run import train


@dataclass(frozen=True)
class Variant:
    """One data set of a sweep: the paper's dataset, its data overrides and the coordinates to reconstruct."""

    label: str
    dataset: str
    data: tuple[str, ...]
    hidden: tuple[int, ...]
    dim: int


def pendulum(n_obs: int = 16, n_train: int | None = None) -> Variant:
    """Pendulum trajectories of ``n_obs`` observation times, the second half hidden."""
    data = (f"data.options.n_obs={n_obs}",) if n_obs != 16 else ()
    data += (f"data.n_train={n_train}",) if n_train else ()
    label = f"pendulum n_train={n_train}" if n_train else f"pendulum {n_obs} times"
    return Variant(label, "pendulum", data, tuple(range(n_obs // 2, n_obs)), n_obs)


def phi4(side: int) -> Variant:
    """phi4 on a side x side lattice, the central (side / 2) x (side / 2) block of sites hidden."""
    lo, hi = side // 4, side // 4 + side // 2
    block = tuple(r * side + c for r in range(lo, hi) for c in range(lo, hi))
    return Variant(f"phi4 {side}x{side}", "phi4", (f"data.options.side={side}",) if side != 8 else (), block,
                   side * side)


SWEEPS: dict[str, tuple[Variant, ...]] = {
    "ladder": tuple(pendulum(n_train=n) for n in (500, 1000, 2000, 5000, 20000)),
    # pendulum of 16 times is the ladder's 20000-trajectory variant (the same data, budget and seed)
    "dimension": (pendulum(32), pendulum(64), phi4(8), phi4(16)),
}
QUICK_SWEEPS: dict[str, tuple[Variant, ...]] = {
    "ladder": (pendulum(n_train=500), pendulum(n_train=1500)),
    "dimension": (pendulum(32), phi4(16)),
}
METHODS: dict[str, tuple[str, ...]] = {
    "collapsed": ("sampler=persistent", "sampler.collapsed=true"),
    "joint": ("sampler=persistent", "sampler.collapsed=false"),
    "no_latent": ("model.dz=0",),
    "amortised": ("sampler=amortised",),
    "flow": (),
}
DEFAULT_METHODS = {"ladder": "collapsed,joint,no_latent,flow", "dimension": "collapsed,no_latent,amortised,flow"}
STARTS = ("neighbours", "prior")


FLOW_MAX_DIM = 64
"""Above this dimension the flow is not run: its conditional MALA took 515-530 s per variant at 64 coordinates on
a 2-core CPU (``results/paper_dimension/``), and a 256-coordinate lattice would cost several times more."""


def applies(variant: Variant, method: str) -> bool:
    """The joint chain differs from the collapsed one only for an energy with a closed-form x | z (the decoder);
    the flow runs up to ``FLOW_MAX_DIM`` coordinates."""
    if method == "joint":
        return variant.dataset == "pendulum"
    return method != "flow" or variant.dim <= FLOW_MAX_DIM


def ebm_run(variant: Variant, method: str, seed: int, budget: Any, extra: list[str], out: Path) -> dict[str, Any]:
    """Train one EBM on the variant and reconstruct its hidden coordinates from both starts."""
    from benchmarks import paper

    overrides = paper.run_overrides(variant.dataset, method, seed, budget, ["test=false", *variant.data, *extra],
                                    METHODS[method])
    RunTimer.runs.clear()
    try:
        train(compose_config(out, overrides))
    except TrainingDiverged as err:
        return {"status": f"diverged: {str(err)[:120]}"}
    row: dict[str, Any] = {"status": "ok", "train_s": RunTimer.runs[0].busy_s}
    model = load(out / "checkpoints" / "last.ckpt")
    data = model.run_data()
    test = data.raw["test"][: budget.n_recon]
    partial = test.numpy().copy()
    partial[:, list(variant.hidden)] = np.nan
    for start in STARTS:
        t0 = time.perf_counter()
        rec = reconstruct(model, partial, budget.recon_samples, n_steps=budget.chain_steps, seed=seed, start=start,
                          check="none")
        elapsed = time.perf_counter() - t0
        hidden = list(variant.hidden)
        found = scores.recon_scores(torch.from_numpy(rec["samples"][:, :, hidden]).double(),
                                    torch.from_numpy(rec["mean"][:, hidden]).double(), test[:, hidden].double())
        row[start] = {**found, "recon_s": elapsed}
    target = scores.truth(data, data.raw["test"][: budget.n_probe])
    if model.dz > 0 and target is not None and variant.dataset == "pendulum":
        x = data.raw["test"][: budget.n_probe]
        z = infer(model, x, budget.n_particles, n_steps=budget.chain_steps, seed=seed, start="neighbours")
        row["r2_posterior"] = float(cv_knn_r2(torch.from_numpy(z).double().mean(1), target[:, :1])[0])
        if getattr(model.module.posterior, "trainable", False):
            with torch.no_grad():
                mu, _ = model.module.posterior(model.module.to_standard_units(x))
            row["r2_encoder"] = float(cv_knn_r2(mu.double(), target[:, :1])[0])
    return row


def flow_run(variant: Variant, seed: int, budget: Any, out: Path) -> dict[str, Any]:
    """Fit the flow on the variant's training split and sample its hidden coordinates conditionally."""
    data = variant_data(variant, seed, budget, out)
    t0 = time.perf_counter()
    flow, mean, std = fit_flow(data.raw["train"], steps=budget.flow_steps, seed=seed)
    row: dict[str, Any] = {"status": "ok", "train_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    found = scores.flow_reconstruction(flow, mean, std, data.raw["train"], data.raw["test"][: budget.n_recon],
                                       list(variant.hidden), budget, seed)
    row["knn"] = {**found, "recon_s": time.perf_counter() - t0}
    return row


def variant_data(variant: Variant, seed: int, budget: Any, out: Path) -> Any:
    """The variant's data module, prepared (the splits an EBM run of the same seed and budget trains on)."""
    overrides = [f"data={variant.dataset}", f"seed={seed}", *data_overrides(budget, variant)]
    return hydra.utils.instantiate(compose_config(out, overrides).data).prepare()


def data_overrides(budget: Any, variant: Variant) -> list[str]:
    """The budget's ``data.*`` overrides, then the variant's; for a key set by both, the variant's value."""
    from benchmarks import paper

    return paper.last_wins([o for o in budget.data if o.startswith("data.")] + list(variant.data))


def references(variant: Variant, seed: int, budget: Any, out: Path) -> dict[str, Any]:
    """The method-free rows of a variant: k-NN, PCA's R^2 and, on the pendulum, the Bayes optimum."""
    data = variant_data(variant, seed, budget, out)
    hidden, test = list(variant.hidden), data.raw["test"]
    t0 = time.perf_counter()
    ref: dict[str, Any] = {"knn": {**scores.knn_reconstruction(data.raw["train"], test[: budget.n_recon], hidden,
                                                                 budget.recon_samples)}}
    ref["knn"]["recon_s"] = time.perf_counter() - t0
    target = scores.truth(data, test[: budget.n_probe])
    if variant.dataset == "pendulum":
        pcs = scores.principal_components(data.raw["train"], test[: budget.n_probe], 2)
        ref["r2_pca"] = float(cv_knn_r2(pcs, target[:, :1])[0])
        t0 = time.perf_counter()
        bayes = scores.bayes_scores(data, test[: budget.n_probe], test[: budget.n_recon], hidden,
                                    budget.recon_samples)
        ref["bayes"] = {k.removeprefix("bayes_"): v for k, v in bayes.items() if k.startswith("bayes_")}
        ref["bayes"]["recon_s"] = time.perf_counter() - t0
        ref["r2_bayes"] = bayes["r2_bayes"]
    return ref


def run_sweep(name: str, variants: tuple[Variant, ...], methods: list[str], budget: Any, extra: list[str],
              runs: Path, out: Path) -> dict[str, Any]:
    """Every (variant, seed, method) in turn; the rows (``rows.partial.json`` kept as it goes) and references."""
    rows: list[dict[str, Any]] = []
    refs: dict[str, Any] = {}
    start = time.perf_counter()
    for variant in variants:
        refs[variant.label] = references(variant, 0, budget, runs / variant.label / "data")
        for seed in range(budget.seeds or 1):
            for method in methods:
                if not applies(variant, method):
                    continue
                run_dir = runs / variant.label / f"{method}_seed{seed}"
                t0 = time.perf_counter()
                row = flow_run(variant, seed, budget, run_dir) if method == "flow" else \
                    ebm_run(variant, method, seed, budget, extra, run_dir)
                rows.append({"variant": variant.label, "method": method, "seed": seed, **row})
                (out / "rows.partial.json").write_text(json.dumps({"sweep": name, "rows": rows, "references": refs}))
                print(f"[{time.perf_counter() - start:7.0f} s] {variant.label:22s} {method:10s} seed {seed}: "
                      f"{row['status']} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return {"sweep": name, "budget": asdict(budget), "variants": [asdict(v) for v in variants], "rows": rows,
            "references": refs, "wall_s": time.perf_counter() - start}


COLUMNS = ("data", "method", "start", "seeds", "train s", "recon s", "recon RMSE", "RMSE / k-NN", "RMSE / Bayes",
           "ES", "90% coverage", "R² energy")


def sweep_table(report: dict[str, Any]) -> str:
    """The sweep's Markdown table: per variant, every method and start, then the reference rows."""
    lines = []
    for variant in report["variants"]:
        label, ref = variant["label"], report["references"][variant["label"]]
        knn, bayes = ref["knn"]["recon_rmse"], ref.get("bayes", {}).get("recon_rmse", math.nan)
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for row in (r for r in report["rows"] if r["variant"] == label and r["status"] == "ok"):
            for start in (s for s in (*STARTS, "knn") if s in row):
                groups.setdefault((row["method"], start), []).append({**row, **row[start]})
        for (method, start), rs in groups.items():
            rmse = [r["recon_rmse"] for r in rs]
            to_bayes = [v / bayes for v in rmse] if math.isfinite(bayes) else []
            r2 = summary([r.get("r2_posterior") for r in rs], ".3f")
            if any("r2_encoder" in r for r in rs):
                r2 += f" (encoder {summary([r['r2_encoder'] for r in rs], '.3f')})"
            lines.append((label, method, "k-NN samples" if start == "knn" else start, len(rs),
                          summary([r["train_s"] for r in rs], ".0f"), summary([r["recon_s"] for r in rs], ".1f"),
                          summary(rmse, ".3f"), summary([v / knn for v in rmse], ".2f"),
                          summary(to_bayes, ".2f"), summary([r["recon_es"] for r in rs], ".3f"),
                          summary([r["recon_cov90"] for r in rs], ".2f"), r2 if start == "neighbours" else "n/a"))
        for name, key in (("knn (reference)", "knn"), ("bayes (the limit)", "bayes")):
            if key in ref:
                r = ref[key]
                r2 = ref.get("r2_pca" if key == "knn" else "r2_bayes", math.nan)
                lines.append((label, name, "-", 1, "n/a", f"{r['recon_s']:.1f}", f"{r['recon_rmse']:.3f}",
                              f"{r['recon_rmse'] / knn:.2f}", f"{r['recon_rmse'] / bayes:.2f}" if bayes == bayes else
                              "n/a", f"{r['recon_es']:.3f}", f"{r['recon_cov90']:.2f}",
                              f"{r2:.3f}{' (PCA)' if key == 'knn' else ''}" if r2 == r2 else "n/a"))
    return markdown_table(COLUMNS, lines)
