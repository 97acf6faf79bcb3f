"""The default ``python train.py`` end to end, eager against ``sampler.compile=true``, in one run on one machine.

Runs the README's main command (the double well, its default steps, validations and the test) as a subprocess
once per variant, one after the other, and prints a table: wall time (the whole process: start-up, compilation,
training, validation, test), its ratio against the eager run, and the final test W2 (with its data floor), NLL and
ELBO read from the run's CSV log, so that a speed-up is shown to leave the model's quality within noise. The
dense-matmul rate is measured before and after, as the speed of the machine the ratios were taken on. The report
goes to a new file in ``benchmarks/results/end_to_end/``.

    python -m benchmarks.end_to_end [--variants eager,compiled] [--repeats 2] [overrides ...]

With ``--repeats R`` the variants run interleaved R times (eager, compiled, eager, compiled, ...) and the table
shows each variant's best wall time with all of them beside it, so that a burst of load on a shared machine that
hits one run does not decide the ratio.

Extra Hydra overrides apply to every variant (``trainer.max_steps=400`` for a quick look).
"""

from __future__ import annotations

import argparse
import csv
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, Report, machine, matmul_gflops, report_path

VARIANTS: dict[str, tuple[str, ...]] = {"eager": ("sampler.compile=false",), "compiled": ("sampler.compile=true",)}
METRICS = ("test/w2", "test/w2_floor", "test/nll", "test/elbo")


def last_values(metrics_csv: Path) -> dict[str, float]:
    """The last logged value of each of ``METRICS`` in a Lightning CSV log (NaN where never logged)."""
    out = {name: math.nan for name in METRICS}
    with metrics_csv.open() as handle:
        for row in csv.DictReader(handle):
            for name in METRICS:
                if row.get(name):
                    out[name] = float(row[name])
    return out


def run(variant: str, overrides: list[str], run_dir: Path) -> dict[str, float]:
    """One ``python train.py`` of ``variant``; its wall time and final test metrics."""
    command = [sys.executable, "train.py", f"hydra.run.dir={run_dir}", *VARIANTS[variant], *overrides]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{variant}: train.py exited {done.returncode}: {done.stderr.strip()[-400:]}")
    logs = sorted(run_dir.rglob("metrics.csv"))
    if not logs:
        raise SystemExit(f"{variant}: no metrics.csv under {run_dir}; the CSV logger is part of logger=default.")
    return {"seconds": seconds, **last_values(logs[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {list(VARIANTS)}")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved runs of each variant (best is shown)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every variant")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    before = matmul_gflops("cpu")
    runs: dict[str, list[dict[str, float]]] = {variant: [] for variant in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for variant in variants:
                runs[variant].append(run(variant, args.overrides, Path(tmp) / f"{variant}_{repeat}"))
                print(f"# {variant} run {repeat + 1}: {runs[variant][-1]}", flush=True)
    after = matmul_gflops("cpu")
    rows = {variant: min(done, key=lambda r: r["seconds"]) for variant, done in runs.items()}
    reference = rows[variants[0]]["seconds"]
    with Report(report_path("end_to_end")) as report:
        report.line(f"{machine('cpu', [before, after])}, before and after")
        report.line(f"# python train.py {' '.join(args.overrides)}; best of {args.repeats} interleaved run(s) per "
                    f"variant; speed-up = {variants[0]} wall time / variant wall time")
        report.table(
            ("variant", "wall s (best)", "all runs, s", "speed-up", "test W2", "W2 floor", "test NLL", "test ELBO"),
            [(variant, f"{row['seconds']:.1f}", ", ".join(f"{r['seconds']:.1f}" for r in runs[variant]),
              f"{reference / row['seconds']:.2f}x", f"{row['test/w2']:.4f}", f"{row['test/w2_floor']:.4f}",
              f"{row['test/nll']:.4f}", f"{row['test/elbo']:.4f}") for variant, row in rows.items()],
        )


if __name__ == "__main__":
    main()
