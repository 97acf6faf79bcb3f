"""Speed of the inner loops, as ratios measured in one run on one machine, beside its dense-matmul rate.

One table:
- Kernel throughput (particle-steps/s) of ``lvebm_lightning.langevin.langevin`` for the MLP energy (2 hidden
  layers of width W, SiLU, over (x, z) with dx = 2, dz = 1) at batch B, ULA and MALA: a minimal hand-written
  eager loop of the same maths (the reference), this kernel eager and compiled (``compile=True``), as ratios
  against the reference. Each figure is the best of interleaved repeats (the least disturbed run on a shared
  machine); compile time (the first call) is excluded and printed.
- Achieved FLOP/s of the hand loop and of the compiled kernel, counted from the network's shapes: forward plus
  input-gradient backward is 4 B sum_l n_in n_out per step (no parameter gradients), as a share of the matmul
  rate (``torch.mm`` of 2048 x 2048 float32) measured in the same row, interleaved with it (best of the row's
  repeats, the ``mm GFLOP/s`` column).
- The persistent store for N = 1e4, 1e5, 1e6 data (K = 4, dz = 8): time of one batch's get + set (B = 256)
  relative to N = 1e4 (flat in N: indexed, never scanned) and memory (linear in N), on the device and in host
  memory (``keep_on_host``).

    python benchmarks/speed.py [--quick] [--device cpu|cuda] [--steps 20] [--threads N] [--out table.txt]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import torch

from lvebm_lightning.energies import MLPEnergy, on_pairs
from lvebm_lightning.langevin import LangevinConfig, langevin
from lvebm_lightning.particles.store import ParticleStore

H = 0.01


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _seconds(fn: Callable[[], object], device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def matmul_gflops(device: str, n: int = 2048, repeats: int = 10) -> float:
    """Dense float32 matmul rate 2 n^3 / t in GFLOP/s, best of ``repeats``."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    return max(2 * n**3 / _seconds(lambda: a @ b, device) for _ in range(repeats)) / 1e9


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


def kernel_rows(args: argparse.Namespace, gflops: float, emit: Callable[[str], None], gflops_seen: list[float]) -> None:
    for width in args.widths:
        net = MLPEnergy(2, 1, width=width, depth=2).to(args.device)
        joint = on_pairs(net, 2)
        flops_per_particle_step = 4 * (3 * width + width * width + width)
        for batch in args.batches:
            if width * batch > args.max_width_batch:
                emit(f"{width:>5} {batch:>6}  (skipped: W x B > {args.max_width_batch:.0e} on this machine)")
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
                compile_s = _seconds(variants["compiled"], args.device)  # first call: compiles
                for fn in variants.values():
                    fn()  # warm-up
                times: dict[str, list[float]] = {k: [] for k in variants}
                row_gflops = gflops
                for _ in range(args.repeats):  # interleaved, so a burst of contention hits every variant alike
                    for name, fn in variants.items():
                        times[name].append(_seconds(fn, args.device))
                    row_gflops = max(row_gflops, matmul_gflops(args.device, repeats=1))
                med = {k: min(v) for k, v in times.items()}
                gflops_seen.append(row_gflops)
                rate = batch * n_steps / med["hand"]
                hand_share = 100 * rate * flops_per_particle_step / (row_gflops * 1e9)
                comp_share = 100 * batch * n_steps / med["compiled"] * flops_per_particle_step / (row_gflops * 1e9)
                emit(
                    f"{width:>5} {batch:>6} {kernel:>5} {n_steps:>4} {rate:>12.3e} {med['hand'] / med['eager']:>8.2f}x "
                    f"{med['hand'] / med['compiled']:>8.2f}x {hand_share:>7.1f}% {comp_share:>7.1f}% {compile_s:>8.1f} "
                    f"{row_gflops:>6.0f}"
                )


def store_rows(args: argparse.Namespace, emit: Callable[[str], None]) -> None:
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
            seconds = min(_seconds(steps, args.device) for _ in range(7)) / len(batches)
            reference.setdefault(host, seconds)
            megabytes = store.values.element_size() * store.values.nelement() / 2**20
            where = "host" if host else args.device
            ratio = seconds / reference[host]
            emit(f"{n:>8.0e} {where:>6} {1e6 * seconds:>9.1f} us {ratio:>6.2f}x {megabytes:>9.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="widths 128 256, batches 256 8192")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--work", type=float, default=2e6, help="at most T W B per run: large W B run fewer steps")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args()
    args.widths = [128, 256] if args.quick else [128, 256, 1024]
    args.batches = [256, 8192] if args.quick else [256, 8192, 65536]
    args.store_sizes = [10_000, 100_000, 1_000_000]
    args.max_width_batch = 1e9 if args.device == "cuda" else 8192 * 1024
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    gflops = matmul_gflops(args.device)
    name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    header = [
        f"# device={args.device} ({name}), torch {torch.__version__}, threads={torch.get_num_threads()}, "
        f"dense matmul {gflops:.0f} GFLOP/s (2048^2 float32, same run)",
        f"# kernel: MLP 3 -> W -> W -> 1 SiLU, T <= {args.steps} steps (fewer where W B is large), h={H}; "
        "ratios = hand-loop time / variant time",
        f"{'W':>5} {'B':>6} {'step':>5} {'T':>4} {'hand p-st/s':>12} {'eager':>9} {'compiled':>9} {'hand':>8} "
        f"{'compiled':>8} {'compile':>8} {'mm':>6}",
        f"{'':>5} {'':>6} {'':>5} {'':>4} {'':>12} {'/hand':>9} {'/hand':>9} {'%mm':>8} {'%mm':>8} {'s':>8} "
        f"{'GFLOP/s':>6}",
    ]
    out = open(args.out, "w") if args.out else None  # noqa: SIM115 - written row by row, closed at the end

    def emit(line: str) -> None:
        print(line, flush=True)
        if out is not None:
            out.write(line + "\n")
            out.flush()

    for line in header:
        emit(line)
    gflops_seen = [gflops]
    kernel_rows(args, gflops, emit, gflops_seen)
    emit(f"# dense matmul over the run: {min(gflops_seen):.0f}-{max(gflops_seen):.0f} GFLOP/s (best per row; "
         "the spread is the machine's contention)")
    emit("# store: K=4, dz=8, B=256; one batch's get + set, vs N=1e4 of the same placement; memory of the store")
    emit(f"{'N':>8} {'where':>6} {'get+set':>12} {'vs 1e4':>7} {'memory':>13}")
    store_rows(args, emit)
    if out is not None:
        out.close()


if __name__ == "__main__":
    main()
