"""Where the particle ELBO loses to a fitted Gaussian encoder: the per-datum gap on one trained model of the table.

Trains one EBM run of ``benchmarks/paper.py`` (same overrides and default budget), then, on its frozen energy,
compares per test datum the particle ELBO of K fresh posterior chains with the ELBO of a Gaussian encoder fitted
until converged (``paper_scores.elbo_gaps``), for each chain start (N(0, I), or the persistent particles of the
nearest training data: ``inference.infer(start=...)``) and chain length given. Prints the mean with its standard
error, the median, quantiles, the share of test data where the particles win, and the mean without the worst 5%:
a mean dragged down by a few data (chains in a minor mode) reads differently from a gap that every datum pays.

    python -m benchmarks.elbo_gap [--dataset pendulum] [--method persistent] [--seed 0] [--chain-steps 1000,4000]
                                  [--starts prior,neighbours]

The report goes to a new file in ``benchmarks/results/elbo_gap/``.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import torch

from benchmarks import paper, paper_scores
from benchmarks.common import Report, report_path
from lvebm_lightning.config.compose import compose_config
from lvebm_lightning.inference import load
from lvebm_lightning.training.run import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="pendulum", choices=list(paper.DATASETS))
    latent_methods = [m for m in paper.METHODS if m not in ("flow", "no_latent")]
    parser.add_argument("--method", default="persistent", choices=latent_methods)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chain-steps", default="1000,4000", help="comma-separated posterior chain lengths T")
    parser.add_argument("--starts", default=None,
                        help="comma-separated chain starts (default: prior,neighbours for the persistent method, whose "
                        "store the neighbours' particles come from; prior for the others)")
    args = parser.parse_args()
    steps = tuple(int(t) for t in args.chain_steps.split(","))
    default = "prior,neighbours" if args.method == "persistent" else "prior"
    starts = tuple((args.starts or default).split(","))
    if "neighbours" in starts and args.method != "persistent":
        parser.error(f"--starts neighbours needs the persistent method's store; {args.method} keeps none")
    budget = paper.Budget()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        train(compose_config(out, paper.run_overrides(args.dataset, args.method, args.seed, budget, [])))
        model = load(out / "checkpoints" / "last.ckpt")
        gaps, _ = paper_scores.elbo_gaps(model, model.run_data(), budget, args.seed, steps, starts)
    rows = []
    for (start, t), gap in gaps.items():
        gap = gap.double()
        q = torch.quantile(gap, torch.tensor([0.01, 0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
        trimmed = gap.sort().values[len(gap) // 20 :].mean()
        rows.append((start, t, f"{gap.mean():.3f}", f"{gap.std() / math.sqrt(len(gap)):.3f}", f"{q[2]:.3f}",
                     f"{q[0]:.2f}", f"{q[1]:.3f}", f"{q[3]:.3f}", f"{(gap > 0).double().mean():.2f}", f"{trimmed:.3f}"))
    with Report(report_path("elbo_gap")) as report:
        report.line(f"# {args.dataset} {args.method} seed {args.seed}: particle ELBO - fitted-encoder ELBO per test "
                    f"datum (K = {budget.n_particles}, S = {budget.elbo_samples}, {budget.n_probe} test data), nats")
        report.table(("start", "T", "mean", "se", "median", "1%", "10%", "90%", "share > 0",
                      "mean without the worst 5%"), rows)


if __name__ == "__main__":
    main()
