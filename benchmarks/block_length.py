"""Compiled block length for long chains: does a longer block make the evaluation chains cheaper?

    python -m benchmarks.block_length [--batch 2000] [--steps 4000] [--blocks 5 20 50] [--repeats 2]

The compiled path (``lvebm_lightning.langevin.compiled``) runs a chain in blocks of ``BLOCK`` steps, one graph
each. Longer blocks amortise the per-call overhead over more steps, at the price of a longer compilation. This
times, for each block length, the first call (compilation of the start and the block graphs, on whatever
inductor cache the machine has) and the best of ``--repeats`` chains of the evaluation's shape (default: the
fresh long chains of validation, n_eval 2000 x T_eval 4000, MALA, the default MLP 3 -> 128 -> 128 -> 1 of the
double well), as ratios against the shipped block length, with the dense-matmul rate measured in the same run.
The report goes to a new file in ``benchmarks/results/block_length/``.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import Report, machine, matmul_gflops, report_path, seconds
from lvebm_lightning.energies import MLPEnergy
from lvebm_lightning.langevin import LangevinConfig, langevin
from lvebm_lightning.langevin import compiled as langevin_compiled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
            compile_s = seconds(lambda c=first: langevin(joint, y, c, torch.Generator().manual_seed(0)))
            chain = LangevinConfig(0.01, args.steps, kernel="mala", compile=True)
            times = [seconds(lambda c=chain: langevin(joint, y, c, torch.Generator().manual_seed(0)))
                     for _ in range(args.repeats)]
            rows.append((block, compile_s, min(times)))
    finally:
        langevin_compiled.BLOCK = shipped
    gflops.append(matmul_gflops("cpu"))
    reference = next((t for b, _, t in rows if b == shipped), rows[0][2])
    with Report(report_path("block_length")) as report:
        report.line(machine("cpu", gflops))
        report.line(f"# MALA chains of {args.steps} steps at batch {args.batch}, MLP 3 -> 128 -> 128 -> 1; shipped "
                    f"BLOCK = {shipped}; speed = shipped block's chain time / this block's")
        report.table(("block", "first call (compile), s", "chain, ms (best)", "speed vs shipped"),
                     [(block, f"{compile_s:.1f}", f"{1e3 * chain_s:.2f}", f"{reference / chain_s:.2f}")
                      for block, compile_s, chain_s in rows])


if __name__ == "__main__":
    main()
