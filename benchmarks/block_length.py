"""Compiled block length for long chains: does a longer block make the evaluation chains cheaper?

    python benchmarks/block_length.py [--batch 2000] [--steps 4000] [--blocks 5 20 50] [--repeats 2]

The compiled path (``lvebm_lightning.langevin.compiled``) runs a chain in blocks of ``BLOCK`` steps, one graph
each. Longer blocks amortise the per-call overhead over more steps, at the price of a longer compilation. This
times, for each block length, the first call (compilation of the start and the block graphs, on whatever
inductor cache the machine has) and the best of ``--repeats`` chains of the evaluation's shape (default: the
fresh long chains of validation, n_eval 2000 x T_eval 4000, MALA, the default MLP 3 -> 128 -> 128 -> 1 of the
double well), as ratios against the shipped block length, with the dense-matmul rate measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.speed import matmul_gflops  # noqa: E402
from lvebm_lightning.energies import MLPEnergy  # noqa: E402
from lvebm_lightning.langevin import LangevinConfig, langevin  # noqa: E402
from lvebm_lightning.langevin import compiled as langevin_compiled  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--blocks", type=int, nargs="+", default=[5, 20, 50])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    shipped = langevin_compiled.BLOCK
    torch.manual_seed(0)
    energy = MLPEnergy(2, 1, width=128, depth=2, gamma=0.1)

    def joint(xz: torch.Tensor) -> torch.Tensor:
        return energy(xz[..., :2], xz[..., 2:])

    y = torch.randn(args.batch, 3)
    gflops = [matmul_gflops("cpu")]
    rows = []
    try:
        for block in args.blocks:
            langevin_compiled.BLOCK = block
            first = LangevinConfig(0.01, 2 * block, kernel="mala", compile=True)
            start = time.perf_counter()
            langevin(joint, y, first, torch.Generator().manual_seed(0))
            compile_s = time.perf_counter() - start
            chain = LangevinConfig(0.01, args.steps, kernel="mala", compile=True)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                langevin(joint, y, chain, torch.Generator().manual_seed(0))
                times.append(time.perf_counter() - start)
            rows.append((block, compile_s, min(times)))
    finally:
        langevin_compiled.BLOCK = shipped
    gflops.append(matmul_gflops("cpu"))
    reference = next((t for b, _, t in rows if b == shipped), rows[0][2])
    print(f"# torch {torch.__version__}, threads={torch.get_num_threads()}, dense matmul "
          f"{min(gflops):.0f}-{max(gflops):.0f} GFLOP/s (2048^2 float32, this run); MALA chains of "
          f"{args.steps} steps at batch {args.batch}, MLP 3 -> 128 -> 128 -> 1; shipped BLOCK = {shipped}")
    print(f"{'block':>6} {'first call (compile), s':>24} {'chain, ms (best)':>17} {'speed vs shipped':>17}")
    for block, compile_s, chain_s in rows:
        print(f"{block:>6} {compile_s:>24.1f} {1e3 * chain_s:>17.2f} {reference / chain_s:>16.2f}x")


if __name__ == "__main__":
    main()
