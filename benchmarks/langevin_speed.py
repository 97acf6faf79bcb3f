"""Speed of the Langevin inner loop: particle-steps per second of the shared kernel, measured in one run.

Compares, on the default energy network (MLP 128x2, SiLU) over (x, z) with dx = 2, dz = 1:
- plain eager Langevin;
- the same network with spectral normalisation, recomputing the normalised weights every step (what a naive
  loop does) versus once per chain (``torch.nn.utils.parametrize.cached``, what LVEBMModule does);
- eager versus ``torch.compile`` of the energy (``--compile``; the first call's compile time is excluded and
  reported separately).

    python benchmarks/langevin_speed.py [--particles 256 2048] [--steps 50] [--device cpu|cuda] [--compile]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn.utils import parametrize

from lvebm_lightning.energies import MLPEnergy
from lvebm_lightning.langevin import LangevinConfig, langevin


def _time(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--particles", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    dx, dz = 2, 1
    config = LangevinConfig(step_size=0.01, n_steps=args.steps)
    plain = MLPEnergy(dx, dz).to(args.device)
    normed = MLPEnergy(dx, dz, spectral_norm=True).to(args.device)
    variants = {
        "eager": (plain, False),
        "spectral norm, per step": (normed, False),
        "spectral norm, cached": (normed, True),
    }
    if args.compile:
        compiled = torch.compile(plain)
        variants["torch.compile"] = (compiled, False)

    print(f"device={args.device} steps={args.steps} threads={torch.get_num_threads()}")
    print(f"{'particles':>10} {'variant':<26} {'s/chain':>10} {'particle-steps/s':>18} {'vs eager':>9}")
    for n in args.particles:
        y0 = torch.randn(n, dx + dz, device=args.device)
        generator = torch.Generator(device=args.device).manual_seed(0)
        baseline = None
        for name, (energy, cached) in variants.items():
            def run(energy=energy, cached=cached, y0=y0, generator=generator) -> None:
                fn = lambda y: energy(y[..., :dx], y[..., dx:])  # noqa: E731
                if cached:
                    with parametrize.cached():
                        langevin(fn, y0, config, generator)
                else:
                    langevin(fn, y0, config, generator)

            if name == "torch.compile":
                start = time.perf_counter()
                run()
                print(f"{'':>10} (compile time {time.perf_counter() - start:.1f} s, excluded)")
            seconds = _time(run, args.repeats, args.device)
            baseline = baseline or seconds
            rate = n * args.steps / seconds
            print(f"{n:>10} {name:<26} {seconds:>10.4f} {rate:>18.3e} {baseline / seconds:>8.2f}x")


if __name__ == "__main__":
    main()
