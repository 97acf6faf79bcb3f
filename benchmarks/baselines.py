"""The method against its baselines, same data and the same budget of optimizer steps, measured in one run.

    python -m benchmarks.baselines                                  # double well, conf/ defaults (max_steps)
    python -m benchmarks.baselines --steps 1000 --datasets double_well,mueller_brown seed=1

For each dataset, four runs of ``train(cfg)`` on the composed ``conf/train.yaml`` (its defaults, then the
method's overrides, then the extra Hydra overrides given here):

    persistent   the method: K persistent conditional particles per datum (sampler=persistent)
    short-run    fresh conditional chains from N(0, I) every batch (sampler=short_run)
    amortised    an encoder q_phi(z | x) trained on the ELBO (sampler=amortised)
    no latents   an EBM on x alone (model.dz=0): persistent negative pool, no posterior

Every run trains ``--steps`` optimizer steps (default: trainer.max_steps of the config), validates once at the
end (unless the overrides say otherwise) and is evaluated on the test split; galleries and W&B are off. The
table reports, on the test split (docs/design.md section 5):

    train s       wall time of the training steps only (validation and test excluded), and its ratio to the method
    W2/floor      W2 of fresh long chains from N(0, I) to held-out data, over the floor (two data samples)
    pool/floor    W2 of the persistent negative pool, over the same floor
    NLL, true     exact -log p(x) per datum by quadrature (dx + dz <= 3), and the true density's (known systems)
    gap           NLL - true NLL
    edge          the share of exp(-E) in the quadrature box's outer cells: well above 1e-3, the box cuts the
                  model's mass (an energy not confined in z), and NLL and ELBO are not to be trusted
    ELBO          the particle-mixture ELBO of the posterior particles (no latents: none); ELBO enc: the
                  amortised encoder's own exact-density ELBO

Runs are sequential, one after another in this process, so their wall times are comparable with each other;
on a loaded machine they are all inflated alike. The report goes to a new file in ``benchmarks/results/baselines/``
(beside the dense-matmul rate before and after); ``--json`` also writes the rows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, Report, RunTimer, machine, matmul_gflops, report_path
from lvebm_lightning.config.compose import compose_config
from lvebm_lightning.training.run import train

METHODS: dict[str, list[str]] = {
    "persistent": ["sampler=persistent"],
    "short-run": ["sampler=short_run"],
    "amortised": ["sampler=amortised"],
    "no latents": ["model.dz=0"],
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="double_well", help="comma-separated names of conf/data/, e.g. a,b")
    parser.add_argument("--steps", type=int, default=0, help="optimizer steps per run (0: trainer.max_steps)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {list(METHODS)}")
    parser.add_argument("--json", default="", help="also write the rows to this JSON file")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run, e.g. seed=1")
    return parser.parse_args()


def run(dataset: str, method: str, steps: int, overrides: list[str], out: Path) -> dict[str, Any]:
    """Train and test one method on one dataset; its metrics, training time and step count."""
    budget = [f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}"] if steps else []
    cfg = compose_config(out, [
        f"data={dataset}", *METHODS[method], "logger=csv", "~callbacks.gallery", "test=true",
        "+trainer.enable_progress_bar=false", "+callbacks.timer._target_=benchmarks.common.RunTimer", *budget,
        *overrides,
    ])
    RunTimer.runs.clear()
    metrics = train(cfg)
    (timer,) = RunTimer.runs
    return {"dataset": dataset, "method": method, "seconds": timer.busy_s, "steps": len(timer.steps), **metrics}


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


COLUMNS = ("dataset", "method", "steps", "train s", "x method", "W2/floor", "pool/floor", "NLL", "true", "gap", "edge",
           "ELBO", "ELBO enc")


def table_row(r: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """The cells of ``COLUMNS`` for run ``r``; its training time also as a ratio to the method's on its dataset."""
    base = next((b for b in rows if b["dataset"] == r["dataset"] and b["method"] == "persistent"), None)
    floor = r.get("test/w2_floor")
    pool = r["test/w2_pool"] / floor if "test/w2_pool" in r and floor else None
    return [
        r["dataset"], r["method"], str(r["steps"]), fmt(r["seconds"], ".0f"),
        fmt(r["seconds"] / base["seconds"] if base else None, ".2f"), fmt(r.get("test/w2_ratio"), ".2f"),
        fmt(pool, ".2f"), fmt(r.get("test/nll"), ".3f"), fmt(r.get("test/nll_true"), ".3f"),
        fmt(r.get("test/nll_gap"), ".3f"), fmt(r.get("test/quadrature_edge_mass"), ".0e"),
        fmt(r.get("test/elbo"), ".3f"), fmt(r.get("test/elbo_encoder"), ".3f"),
    ]


def main() -> None:
    args = parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        sys.exit(f"baselines: error: unknown method(s) {unknown}; choose from {list(METHODS)}.")
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    missing = [d for d in datasets if not (ROOT / "conf" / "data" / f"{d}.yaml").is_file()]
    if missing:
        sys.exit(f"baselines: error: no conf/data/<name>.yaml for {missing}; see conf/data/ for the names.")
    os.environ.setdefault("WANDB_MODE", "disabled")
    rows: list[dict[str, Any]] = []
    gflops = [matmul_gflops("cpu")]
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in datasets:
            for method in methods:
                rows.append(run(dataset, method, args.steps, args.overrides, Path(tmp) / dataset / method))
    gflops.append(matmul_gflops("cpu"))
    with Report(report_path("baselines")) as report:
        report.line(f"{machine('cpu', gflops)}, before and after")
        report.line(f"# baselines: {args.steps or 'trainer.max_steps'} optimizer steps per run, test split; "
                    f"overrides: {' '.join(args.overrides) or 'none'}")
        report.table(COLUMNS, [table_row(r, rows) for r in rows])
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
