"""How close can a compiled Langevin step get to the dense-matmul rate? The matmuls' own rate bounds it.

    python -m benchmarks.matmul_share [--widths 128 256] [--batch 8192] [--steps 20]

``speed.py`` reports the compiled kernel's FLOP rate (counted from the network's shapes: forward plus
input-gradient backward, 4 B sum n_in n_out per step) as a share of a large square matmul's rate. This profiles
the same compiled MALA chain (``torch.profiler``, CPU) and splits its time into the matrix products (``aten::mm``,
``aten::addmm``, with the FLOPs the profiler counts for them) and everything else (the fused elementwise
kernels, copies, the Python around the graphs). The counted FLOPs over the matmuls' time alone is the share the
step would reach if everything else took no time: no compiled step of this network can exceed it on this machine.
Every figure comes from one run, with the dense-matmul rate measured before and after; the report goes to a
new file in ``benchmarks/results/matmul_share/``.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import Report, machine, matmul_gflops, report_path, seconds
from lvebm_lightning.energies import MLPEnergy, on_pairs
from lvebm_lightning.langevin import LangevinConfig, langevin

MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    gflops = [matmul_gflops("cpu")]
    rows = []
    for width in args.widths:
        torch.manual_seed(0)
        energy = on_pairs(MLPEnergy(2, 1, width=width, depth=2), 2)
        y = torch.randn(args.batch, 3)
        config = LangevinConfig(0.01, args.steps, kernel="mala", compile=True)
        for _ in range(2):  # compile, then one warm run
            langevin(energy, y, config, torch.Generator().manual_seed(0))
        with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
            wall = seconds(lambda e=energy, y=y, c=config: langevin(e, y, c, torch.Generator().manual_seed(0)))
        events = [e for e in prof.key_averages() if e.key in MATMULS]
        matmul_s = sum(e.self_cpu_time_total for e in events) / 1e6
        matmul_flops = sum(e.flops for e in events)
        counted = 4 * (3 * width + width * width + width) * args.batch * args.steps
        rows.append((width, wall, matmul_s, matmul_flops, counted))
    gflops.append(matmul_gflops("cpu"))
    reference = max(gflops) * 1e9
    with Report(report_path("matmul_share")) as report:
        report.line(f"{machine('cpu', gflops)}, before and after; the shares use {max(gflops):.0f}")
        report.line(f"# compiled MALA, MLP 3 -> W -> W -> 1, batch {args.batch}, {args.steps} steps, profiled after "
                    "a warm run")
        report.table(
            ("W", "step, ms", "in matmuls, ms", "matmuls' own rate, % of reference",
             "counted FLOPs: step, % of reference", "counted FLOPs over matmul time only (the bound), %"),
            [(width, f"{1e3 * wall / args.steps:.2f}", f"{1e3 * matmul_s / args.steps:.2f}",
              f"{100 * matmul_flops / matmul_s / reference:.0f}", f"{100 * counted / wall / reference:.0f}",
              f"{100 * counted / matmul_s / reference:.0f}") for width, wall, matmul_s, matmul_flops, counted in rows],
        )


if __name__ == "__main__":
    main()
