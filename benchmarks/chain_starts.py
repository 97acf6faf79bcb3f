"""Where conditional chains start: the store's neighbours against N(0, I), on a decoder model of the pendulum.

Trains a decoder-energy model (``model/energy=decoder model.dz=2``, defaults otherwise, eager chains) on
``--n-train`` noisy pendulum trajectories (16 angles each), then, on ``--rows`` held-out trajectories and its
frozen energy:

- **reconstruction** of the second half of each trajectory from the first (``inference.reconstruct``) with chains
  from each start: RMSE of the samples' mean, 90% coverage, and the k-NN regression's RMSE on the same rows;
- **posterior inference** (``inference.infer_checked``) from each start: the particle ELBO up to log Z (a mixture
  around the K particles, ``metrics.elbo``; the same log Z for both starts, so their difference is exact up to
  Monte-Carlo error), per datum, and the difference between the starts with its standard error;
- for both, the share of data on which the chains from the store's neighbours and those from N(0, I) disagree
  (``metrics.mixing``), which is what a user sees at the end of ``lvebm-reconstruct`` / ``lvebm-infer``.

    python -m benchmarks.chain_starts [--n-train 1000] [--steps 4000] [--rows 300] [--chains 32]
                                      [--chain-steps 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lvebm_lightning.config.compose import compose_config
from lvebm_lightning.inference import infer_checked, load, reconstruct
from lvebm_lightning.metrics import elbo
from lvebm_lightning.metrics.reconstruction import central_coverage, knn_predict
from lvebm_lightning.training.run import train

ROOT = Path(__file__).resolve().parents[1]

STARTS = ("neighbours", "prior")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=4000, help="optimizer steps (trainer.max_steps)")
    parser.add_argument("--rows", type=int, default=300, help="held-out trajectories reconstructed and inferred")
    parser.add_argument("--chains", type=int, default=32, help="chains per datum and start set")
    parser.add_argument("--chain-steps", type=int, default=1000, help="Langevin steps of every chain")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    overrides = [
        "data=pendulum", f"data.n_train={args.n_train}", "model/energy=decoder", "model.dz=2", f"seed={args.seed}",
        f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.steps}", "logger=csv", "test=false",
        "~callbacks.metrics", "~callbacks.gallery", "~callbacks.reconstruction", "~callbacks.best_checkpoint",
        # eager chains: on a CPU, compiling every new chain shape costs more than these chains gain from it
        "sampler.compile=false",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        train(compose_config(Path(tmp), overrides))
        trained = time.perf_counter() - began
        model = load(Path(tmp) / "checkpoints" / "last.ckpt")
        rows = model.run_data().raw["test"][: args.rows]
        train_x = model.run_data().raw["train"]
        began = time.perf_counter()
        recon, knn = reconstruction(model, rows, train_x, args)
        inference = posterior(model, rows, args)
        scored = time.perf_counter() - began
    print(f"pendulum, decoder dz=2, {args.n_train} training trajectories, {args.steps} steps (trained in "
          f"{trained:.0f} s), seed {args.seed}; {args.rows} test trajectories, {args.chains} chains per start set, "
          f"{args.chain_steps} steps each (scored in {scored:.0f} s)\n")
    print("| start | recon RMSE | 90% coverage | ELBO + log Z (mean) | disagree (reconstruction) | disagree (z) |")
    print("|---|---|---|---|---|---|")
    for start in STARTS:
        r, i = recon[start], inference[start]
        print(f"| {start} | {r['rmse']:.3f} | {r['coverage']:.2f} | {float(i['elbo'].mean()):.2f} | "
              f"{r['disagree']:.1%} | {i['disagree']:.1%} |")
    print(f"| k-NN (k = 10) | {knn:.3f} | | | | |")
    gain = (inference["neighbours"]["elbo"] - inference["prior"]["elbo"]).double()
    print(f"\nELBO(neighbours) - ELBO(prior) per datum: mean {float(gain.mean()):.3f} +- "
          f"{float(gain.std() / math.sqrt(len(gain))):.3f} nats (se), median {float(gain.median()):.3f}, share > 0 "
          f"{float((gain > 0).double().mean()):.2f}")


def reconstruction(model, rows: torch.Tensor, train_x: torch.Tensor, args) -> tuple[dict, float]:
    """Per start: RMSE of the mean and 90% coverage of the second half given the first, and the disagreement
    share with the other start's chains; and the k-NN's RMSE on the same rows."""
    hidden = list(range(rows.shape[1] // 2, rows.shape[1]))
    observed = [j for j in range(rows.shape[1]) if j not in hidden]
    partial = rows.numpy().copy()
    partial[:, hidden] = np.nan
    truth = rows[:, hidden].double()
    out = {}
    for start, other in zip(STARTS, reversed(STARTS)):
        result = reconstruct(model, partial, args.chains, n_steps=args.chain_steps, seed=args.seed, start=start,
                             check=other)
        samples = torch.from_numpy(result["samples"][:, :, hidden]).double()
        out[start] = {"rmse": float(((samples.mean(1) - truth) ** 2).mean().sqrt()),
                      "coverage": float(central_coverage(samples, truth, 0.9)),
                      "disagree": float(result["disagree"].mean())}
    knn = knn_predict(train_x[:, observed].double(), train_x[:, hidden].double(), rows[:, observed].double(), 10)
    return out, float(((knn - truth) ** 2).mean().sqrt())


def posterior(model, rows: torch.Tensor, args) -> dict:
    """Per start: the particle ELBO + log Z of each datum ``[B]`` and the disagreement share with the other start."""
    x_std = model.module.to_standard_units(rows)
    out = {}
    for start, other in zip(STARTS, reversed(STARTS)):
        result = infer_checked(model, rows, args.chains, n_steps=args.chain_steps, seed=args.seed, start=start,
                               check=other)
        z = torch.from_numpy(result["z"])
        bound = elbo(model.module.energy, x_std, z, 0.0, 32, torch.Generator().manual_seed(args.seed))
        out[start] = {"elbo": bound.elbo, "disagree": float(result["disagree"].mean())}
    return out


if __name__ == "__main__":
    main()
