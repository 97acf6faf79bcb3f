"""Quality benchmark: train the default experiment and report how close the *last-step* model is to the truth.

    python -m benchmarks.quality [--datasets double_well mueller_brown] [--seeds 0 1 2] [--out DIR] [-- overrides...]

For each dataset and seed this runs ``train(cfg)`` on the dataset's experiment, ``conf/experiment/<dataset>.yaml``
(the defaults of ``conf/`` on that dataset, composed with Hydra as ``train.py experiment=<dataset>`` composes it,
logger=csv, W&B off), then reads the test-split metrics of the final model (the
trainer tests the module as it stands after the last step, never ``best.ckpt``):

- W2 of fresh long chains from the init distribution after T_eval steps (``w2``, the model's own
  distribution) and after 2 T_eval steps (``w2_2x``: the two must agree within noise, else T_eval is too
  short), W2 of the persistent negative pool (``w2_pool``), the floor (W2 between two data samples of the
  same size n_eval) and the ratios to it;
- the exact test NLL of the model by quadrature, the true density's, their gap, the quadrature edge mass;
- the ELBO and the importance-weighted bound of the posterior particles;
- wall time split into training steps, in-training validation and the final test evaluation, and the
  training throughput in steps per second.

Targets (on a quiet 2-core CPU, 10 minutes per dataset): W2 (chains) <= 1.5 x floor, NLL gap <= 0.10 nats.
Timings depend on the machine's load: the load average at start and end and the dense-matmul rate before and
after are printed with the table. The report goes to a new file in ``benchmarks/results/quality/``.
Extra arguments are Hydra overrides applied to every run, e.g. ``trainer.max_steps=2000``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, Report, RunTimer, machine, markdown_table, matmul_gflops, report_path

TARGET_W2_RATIO = 1.5
TARGET_NLL_GAP = 0.10


def run_one(dataset: str, seed: int, out: Path, overrides: list[str]) -> dict[str, Any]:
    """Train the default experiment on ``dataset`` with ``seed``; the test metrics of the last-step model."""
    from lvebm_lightning.config.compose import compose_config
    from lvebm_lightning.training.run import train

    cfg = compose_config(out / f"{dataset}_seed{seed}", [
        f"experiment={dataset}", f"seed={seed}", "logger=csv", "+callbacks.timer._target_=benchmarks.common.RunTimer",
        *overrides,
    ])
    RunTimer.runs.clear()
    start = time.perf_counter()
    metrics = train(cfg)
    wall = time.perf_counter() - start
    (timer,) = RunTimer.runs
    row = {k.removeprefix("test/"): v for k, v in metrics.items() if k.startswith("test/")}
    validation_s = timer.phase_s("validation")
    train_s = timer.phase_s("fit") - validation_s
    row.update(
        dataset=dataset, seed=seed, steps=timer.global_step, wall_s=wall, train_s=train_s, val_s=validation_s,
        test_s=timer.phase_s("test"), steps_per_s=timer.global_step / max(train_s, 1e-9),
        w2_2x_ratio=row.get("w2_2x", math.nan) / row["w2_floor"],
        w2_pool_ratio=row.get("w2_pool", math.nan) / row["w2_floor"],
        nll_gap=row.get("nll_gap", math.nan),
    )
    return row


COLUMNS = (  # (key, header, format)
    ("dataset", "dataset", "{}"),
    ("seed", "seed", "{}"),
    ("steps", "steps", "{}"),
    ("wall_s", "wall s", "{:.0f}"),
    ("train_s", "train s", "{:.0f}"),
    ("val_s", "val s", "{:.0f}"),
    ("test_s", "test s", "{:.0f}"),
    ("steps_per_s", "steps/s", "{:.1f}"),
    ("w2", "W2 chains", "{:.4f}"),
    ("w2_2x", "W2 2xT", "{:.4f}"),
    ("w2_pool", "W2 pool", "{:.4f}"),
    ("w2_floor", "W2 floor", "{:.4f}"),
    ("w2_ratio", "chains/floor", "{:.2f}"),
    ("w2_2x_ratio", "2xT/floor", "{:.2f}"),
    ("w2_pool_ratio", "pool/floor", "{:.2f}"),
    ("nll", "NLL model", "{:.4f}"),
    ("nll_true", "NLL true", "{:.4f}"),
    ("nll_gap", "NLL gap", "{:+.4f}"),
    ("elbo", "ELBO", "{:.4f}"),
    ("iw_bound", "IW bound", "{:.4f}"),
    ("quadrature_edge_mass", "edge mass", "{:.1e}"),
)


def _cell(value: Any, fmt: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return fmt.format(value)


def table(rows: list[dict[str, Any]]) -> str:
    """One row per run, then per dataset (several seeds) the mean and the spread (max - min) of each number."""
    cells = [[_cell(row.get(k, math.nan), f) for k, _, f in COLUMNS] for row in rows]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        group = [r for r in rows if r["dataset"] == dataset]
        if len(group) < 2:
            continue
        summary = []
        for key, _, fmt in COLUMNS:
            if key == "dataset":
                summary.append(f"**{dataset}**")
            elif key == "seed":
                summary.append(f"mean (spread) of {len(group)}")
            else:
                values = [float(r.get(key, math.nan)) for r in group]
                mean = statistics.fmean(values)
                summary.append(f"{_cell(mean, fmt)} ({_cell(max(values) - min(values), fmt.replace('+', ''))})")
        cells.append(summary)
    return markdown_table([h for _, h, _ in COLUMNS], cells)


def verdict(rows: list[dict[str, Any]]) -> str:
    """Each run against the targets: W2 (chains) <= 1.5 floor and NLL gap <= 0.10 nats."""
    out = []
    for r in rows:
        w2_ok = r["w2_ratio"] <= TARGET_W2_RATIO
        gap_ok = not math.isnan(r["nll_gap"]) and r["nll_gap"] <= TARGET_NLL_GAP
        out.append(
            f"{r['dataset']} seed {r['seed']}: W2 chains/floor {r['w2_ratio']:.2f} "
            f"({'ok' if w2_ok else 'MISS'} <= {TARGET_W2_RATIO}), NLL gap {r['nll_gap']:+.3f} "
            f"({'ok' if gap_ok else 'MISS'} <= {TARGET_NLL_GAP}), wall {r['wall_s'] / 60:.1f} min"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiments = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    parser.add_argument("--datasets", nargs="+", default=experiments, choices=experiments,
                        help="experiments of conf/experiment/ (one per dataset)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out", type=Path, default=None, help="run directories (default: a temporary folder)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. trainer.max_steps=2000")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    out = args.out or Path(tempfile.mkdtemp(prefix="lvebm_quality_"))
    out.mkdir(parents=True, exist_ok=True)

    load_start = os.getloadavg()
    gflops = [matmul_gflops("cpu")]
    rows = []
    for dataset in args.datasets:
        for seed in args.seeds:
            rows.append(run_one(dataset, seed, out, args.overrides))
            print(verdict(rows[-1:]), flush=True)
    gflops.append(matmul_gflops("cpu"))
    load_end = os.getloadavg()
    with Report(report_path("quality")) as report:
        report.line(f"{machine('cpu', gflops)}, before and after")
        report.line(f"# load average (1 min) at start {load_start[0]:.2f}, at end {load_end[0]:.2f}; overrides: "
                    f"{' '.join(args.overrides) or 'none'}; runs in {out}")
        report.line()
        report.line(table(rows))
        report.line()
        report.line(verdict(rows))


if __name__ == "__main__":
    main()
