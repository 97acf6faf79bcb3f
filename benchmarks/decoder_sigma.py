"""The decoder energy's noise scale sigma against its Langevin step: what reconstruction and sampling pay.

The pendulum rows of ``benchmarks/paper.py`` use ``model/energy=decoder`` with sigma = 0.2 fixed (standardised
units) while the data's observation noise is 0.05 rad, about 0.045 in those units: the model's conditional of
the hidden half of a trajectory is wider than the truth's (90% coverage 1.00) and its mean less sharp than the
k-NN baseline's. A smaller sigma makes x | z stiffer: the joint density is a ridge x ~ g(z) of width sigma, so
Langevin stays stable only with h well below sigma^2 and moves along the ridge by ~h per step. This script
trains the pendulum ``persistent`` run of the table (its budget, seed, overrides) once per variant and prints,
per variant, the final sigma, W2 against the data floor, and the reconstruction scores beside the k-NN's (the
report goes to a new file in ``benchmarks/results/decoder_sigma/``):

    default       sigma = 0.2 fixed, h = 0.01 (the paper's pendulum run)
    sigma0.1      sigma = 0.1 fixed, h_z = h_n = 0.0025 (h / sigma^2 unchanged, so each step is as stable)
    learned       sigma learned from 0.2 (``model.energy.learn_sigma=true``), h = 0.01

    python -m benchmarks.decoder_sigma [--seed 0] [--variants default,sigma0.1,learned]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks import paper, paper_scores
from benchmarks.common import Report, machine, matmul_gflops, report_path, seconds
from lvebm_lightning.config.compose import compose_config
from lvebm_lightning.inference import load, sample
from lvebm_lightning.metrics.evaluation import floor_distances, held_out_rows, reference_pairs, sample_distances
from lvebm_lightning.training.run import train

VARIANTS: dict[str, tuple[str, ...]] = {
    "default": (),
    "sigma0.1": ("model.energy.sigma=0.1", "sampler.posterior.step_size=0.0025", "sampler.negative.step_size=0.0025"),
    "learned": ("model.energy.learn_sigma=true",),
}
DATASET = "pendulum"


def score(variant: str, seed: int, budget: paper.Budget, out: Path) -> tuple[dict[str, float], Any]:
    """Train one variant and score it; its row and the run's data module."""
    overrides = paper.run_overrides(DATASET, "persistent", seed, budget, ["test=false", *VARIANTS[variant]])
    row = {"train_s": seconds(lambda: train(compose_config(out, overrides)))}
    model = load(out / "checkpoints" / "last.ckpt")
    data = model.run_data()
    row["sigma"] = float(model.module.energy.sigma.detach())
    x_test, x_train = data.raw["test"], data.raw["train"]
    n = min(budget.n_samples, len(x_test))
    x_model = torch.from_numpy(sample(model, n, seed=seed))
    held = held_out_rows(x_test, n)
    distances = sample_distances(x_model, held, floor_distances(reference_pairs(held, x_train)))
    row["w2_ratio"] = float(distances["w2_ratio"])
    hidden = list(paper.DATASETS[DATASET].hidden)
    row.update(paper_scores.reconstruction_scores(model, data, budget, hidden, seed))
    return row, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {list(VARIANTS)}")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    budget = paper.Budget()
    rows, data = {}, None
    for variant in variants:
        with tempfile.TemporaryDirectory() as tmp:
            rows[variant], data = score(variant, args.seed, budget, Path(tmp))
        print(f"# {variant}: {rows[variant]}", flush=True)
    knn = paper_scores.knn_reconstruction(
        data.raw["train"], data.raw["test"][: budget.n_recon], list(paper.DATASETS[DATASET].hidden),
        budget.recon_samples,
    )
    rows_out = [
        (variant, " ".join(VARIANTS[variant]) or "(none)", f"{row['sigma']:.3f}", f"{row['train_s']:.0f}",
         f"{row['w2_ratio']:.2f}", f"{row['recon_rmse']:.4f}", f"{row['recon_es']:.4f}", f"{row['recon_cov90']:.2f}")
        for variant, row in rows.items()
    ]
    rows_out.append(("k-NN reference", "", "", "", "", f"{knn['recon_rmse']:.4f}", f"{knn['recon_es']:.4f}",
                     f"{knn['recon_cov90']:.2f}"))
    with Report(report_path("decoder_sigma")) as report:
        report.line(machine("cpu", [matmul_gflops("cpu")]))
        report.line(f"# {DATASET} persistent seed {args.seed}, {budget.steps} steps; reconstruction of the second half "
                    f"from the first ({budget.n_recon} test data x {budget.recon_samples} samples, "
                    f"T = {budget.chain_steps})")
        report.table(("variant", "overrides", "final sigma", "train s", "W2/floor", "recon RMSE", "recon ES",
                      "90% coverage"), rows_out)


if __name__ == "__main__":
    main()
