"""Speed of the inner loops, as ratios measured in one run on one machine, beside its dense-matmul rate.

Two tables, from one run:
- Kernel throughput (particle-steps/s) of ``lvebm_lightning.langevin.langevin`` for the MLP energy (2 hidden
  layers of width W, SiLU, over (x, z) with dx = 2, dz = 1) at batch B, ULA and MALA: a minimal hand-written
  eager loop of the same maths (the reference), this kernel eager and compiled (``compile=True``), as ratios
  against the reference. Each figure is the best of interleaved repeats (the least disturbed run on a shared
  machine); compile time (the first call) is excluded and printed.
- Achieved FLOP/s of the hand loop and of the compiled kernel, counted from the network's shapes: forward plus
  input-gradient backward is 4 B sum_l n_in n_out per step (no parameter gradients), as a share of the matmul
  rate (``benchmarks.common.matmul_gflops``) measured in the same row, interleaved with it (best of the row's
  repeats, the ``matmul GFLOP/s`` column).
- The persistent store for N = 1e4, 1e5, 1e6 data (K = 4, dz = 8): time of one batch's get + set (B = 256)
  relative to N = 1e4 (flat in N: indexed, never scanned) and memory (linear in N), on the device and in host
  memory (``keep_on_host``).

    python -m benchmarks.speed [--quick] [--device cpu|cuda] [--steps 20] [--threads N] [--out table.md]

The report goes to a new file in ``benchmarks/results/speed/`` (``--quick``: its ``quick/``), or to ``--out``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.common import Report, machine, matmul_gflops, report_path, seconds
from lvebm_lightning.energies import MLPEnergy, on_pairs
from lvebm_lightning.langevin import LangevinConfig, langevin
from lvebm_lightning.particles.store import ParticleStore

H = 0.01


def hand_loop(energy: Callable, y: torch.Tensor, n_steps: int, metropolis: bool, generator: torch.Generator):
    """The reference: the same maths written as plainly as possible."""
    scale = (2 * H) ** 0.5

    def value_and_grad(v):
        v = v.detach().requires_grad_(True)
        u = energy(v)
        return u.detach(), torch.autograd.grad(u.sum(), v)[0]

    if not metropolis:
        for _ in range(n_steps):
            _, g = value_and_grad(y)
            y = (y - H * g + scale * torch.randn(y.shape, generator=generator, device=y.device)).detach()
        return y
    u, g = value_and_grad(y)
    for _ in range(n_steps):
        prop = y - H * g + scale * torch.randn(y.shape, generator=generator, device=y.device)
        u_p, g_p = value_and_grad(prop)
        log_back, log_fwd = ((y - prop + H * g_p) ** 2).sum(-1), ((prop - y + H * g) ** 2).sum(-1)
        log_ratio = u - u_p + (log_fwd - log_back) / (4 * H)
        acc = torch.rand(log_ratio.shape, generator=generator, device=y.device).log() < log_ratio
        y, u, g = torch.where(acc[:, None], prop, y), torch.where(acc, u_p, u), torch.where(acc[:, None], g_p, g)
    return y


KERNEL_COLUMNS = ("W", "B", "step", "T", "hand, particle-steps/s", "eager / hand", "compiled / hand",
                  "hand, % of matmul", "compiled, % of matmul", "compile time, s", "matmul GFLOP/s")


def kernel_rows(args: argparse.Namespace, gflops: float, report: Report, gflops_seen: list[float]) -> None:
    for width in args.widths:
        net = MLPEnergy(2, 1, width=width, depth=2).to(args.device)
        joint = on_pairs(net, 2)
        flops_per_particle_step = 4 * (3 * width + width * width + width)
        for batch in args.batches:
            if width * batch > args.max_width_batch:
                skipped = f"skipped: W x B > {args.max_width_batch:.0e} on this machine"
                report.row([width, batch, skipped, *[""] * (len(KERNEL_COLUMNS) - 3)])
                continue
            y0 = torch.randn(batch, 3, device=args.device)
            n_steps = max(3, min(args.steps, int(args.steps * args.work / (width * batch))))  # bounded work per run
            for kernel in ("ula", "mala"):
                metropolis = kernel == "mala"
                gen = torch.Generator(device=args.device).manual_seed(0)
                eager = LangevinConfig(H, n_steps, kernel=kernel)
                compiled = LangevinConfig(H, n_steps, kernel=kernel, compile=True)
                variants = {
                    "hand": lambda e=joint, y0=y0, t=n_steps, m=metropolis, g=gen: hand_loop(e, y0, t, m, g),
                    "eager": lambda e=joint, y0=y0, c=eager, g=gen: langevin(e, y0, c, g),
                    "compiled": lambda e=joint, y0=y0, c=compiled, g=gen: langevin(e, y0, c, g),
                }
                compile_s = seconds(variants["compiled"], args.device)  # first call: compiles
                for fn in variants.values():
                    fn()  # warm-up
                times: dict[str, list[float]] = {k: [] for k in variants}
                row_gflops = gflops
                for _ in range(args.repeats):  # interleaved, so a burst of contention hits every variant alike
                    for name, fn in variants.items():
                        times[name].append(seconds(fn, args.device))
                    row_gflops = max(row_gflops, matmul_gflops(args.device, repeats=1))
                best = {k: min(v) for k, v in times.items()}
                gflops_seen.append(row_gflops)
                rate = batch * n_steps / best["hand"]
                hand_share = 100 * rate * flops_per_particle_step / (row_gflops * 1e9)
                comp_share = 100 * batch * n_steps / best["compiled"] * flops_per_particle_step / (row_gflops * 1e9)
                report.row([
                    width, batch, kernel.upper(), n_steps, f"{rate:.2e}", f"{best['hand'] / best['eager']:.2f}",
                    f"{best['hand'] / best['compiled']:.2f}", f"{hand_share:.1f}", f"{comp_share:.1f}",
                    f"{compile_s:.1f}", f"{row_gflops:.0f}",
                ])


def store_rows(args: argparse.Namespace, report: Report) -> None:
    reference: dict[bool, float] = {}
    k, dz, batch = 4, 8, 256
    for host in (False, True):
        for n in args.store_sizes:
            store = ParticleStore(n, k, dz).to(args.device)
            if host:
                store.keep_on_host()
            gen = torch.Generator().manual_seed(0)
            batches = [torch.randint(0, n, (batch,), generator=gen).to(args.device) for _ in range(50)]

            def steps(store=store, batches=batches):
                for index in batches:
                    store.set(index, store.get(index) + 1.0)

            steps()
            per_batch = min(seconds(steps, args.device) for _ in range(7)) / len(batches)
            reference.setdefault(host, per_batch)
            megabytes = store.values.element_size() * store.values.nelement() / 2**20
            where = "host" if host else args.device
            report.row([f"{n:.0e}", where, f"{1e6 * per_batch:.1f}", f"{per_batch / reference[host]:.2f}",
                        f"{megabytes:.1f}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="widths 128 256, batches 256 8192 (written to quick/)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--work", type=float, default=2e6, help="at most T W B per run: large W B run fewer steps")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the report's file (default: a new file in benchmarks/results/speed/)")
    args = parser.parse_args()
    args.widths = [128, 256] if args.quick else [128, 256, 1024]
    args.batches = [256, 8192] if args.quick else [256, 8192, 65536]
    args.store_sizes = [10_000, 100_000, 1_000_000]
    args.max_width_batch = 1e9 if args.device == "cuda" else 8192 * 1024
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    gflops = matmul_gflops(args.device)
    with Report(args.out or report_path("speed", args.device, quick=args.quick)) as report:
        report.line(machine(args.device, [gflops]))
        report.line(f"# kernel: MLP 3 -> W -> W -> 1 SiLU, T <= {args.steps} steps (fewer where W B is large), "
                    f"h={H}; ratios = hand-loop time / variant time, best of {args.repeats} interleaved repeats; "
                    "matmul GFLOP/s: best in the row, interleaved with it")
        report.header(KERNEL_COLUMNS)
        gflops_seen = [gflops]
        kernel_rows(args, gflops, report, gflops_seen)
        report.line(f"# dense matmul over the run: {min(gflops_seen):.0f}-{max(gflops_seen):.0f} GFLOP/s (best per "
                    "row; the spread is the machine's contention)")
        report.line("# store: K=4, dz=8, B=256; one batch's get + set, vs N=1e4 of the same placement; memory of the "
                    "store")
        report.header(("N", "where", "get + set, us", "vs N = 1e4", "memory, MiB"))
        store_rows(args, report)


if __name__ == "__main__":
    main()
