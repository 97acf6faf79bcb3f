"""``python -m benchmarks.paper --quick``: every method on every dataset through every score, on tiny budgets.

The numbers of a 20-step run mean nothing; what is checked is that each score the table promises for a
(dataset, method) exists and is finite, that the table has no missing or NaN cell where a score applies, and that
every dataset has its gallery. The metrics themselves are tested against analytic answers elsewhere
(test_reconstruction, test_fitted_encoder, test_physical_metrics, test_metrics_*). A quick or partial run must
write beside the default run's committed results, never over them.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import paper
from benchmarks.common import RESULTS

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ["double_well", "mueller_brown", "oscillator", "lorenz63", "pendulum", "phi4", "linear_gaussian"]
EBM = ["persistent", "short_run", "amortised", "no_latent"]
LATENT = ["persistent", "short_run", "amortised"]
BOLTZMANN = {"double_well", "mueller_brown", "oscillator", "phi4", "linear_gaussian"}
EXACT_NLL = {"double_well", "mueller_brown", "oscillator", "linear_gaussian"}
OBSERVABLES = {"phi4": ["mag_tv", "mag_tv_floor", "g_z"], "pendulum": ["energy_w1_ratio"],
               "linear_gaussian": ["cov_error", "cov_error_floor"]}
RECON = {"lorenz63", "pendulum", "phi4"}
RECON_KEYS = ["recon_rmse", "recon_es", "recon_cov90"]


def expected_keys(dataset: str, method: str) -> list[str]:
    keys = ["train_s", "w2_ratio", *OBSERVABLES.get(dataset, [])]
    keys += ["fe_spread"] if dataset in BOLTZMANN else []
    keys += ["nll_gap"] if dataset in EXACT_NLL else []
    if method in LATENT:
        keys += ["elbo_gain", "elbo"]
        # The method starts its probe chains from its store's nearest particles, and reports the N(0, I) start too.
        keys += ["elbo_gain_prior"] if method == "persistent" else []
        if dataset in {"pendulum", "phi4"}:
            keys += ["r2_posterior"] + (["r2_encoder"] if method == "amortised" else [])
    if (method in EBM or method == "flow") and dataset in RECON:
        keys += RECON_KEYS
    return keys


@pytest.mark.slow
def test_quick_paper_table_fills_every_cell(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.paper", "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=1500, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "rows.json").read_text())
    rows = {(r["dataset"], r["method"]): r for r in report["rows"]}
    assert set(rows) == {(d, m) for d in DATASETS for m in [*EBM, "flow"]}
    for (dataset, method), row in rows.items():
        assert row["status"] == "ok", (dataset, method, row["status"])
        if method in LATENT:
            assert row["elbo_start"] == ("neighbours" if method == "persistent" else "prior"), (dataset, method)
        for key in expected_keys(dataset, method):
            value = row.get(key)
            assert isinstance(value, float) and math.isfinite(value), (dataset, method, key, value)
    for dataset in RECON:
        assert all(math.isfinite(report["references"][dataset][k]) for k in RECON_KEYS), dataset
    for dataset in ("pendulum", "phi4"):
        assert math.isfinite(report["references"][dataset]["r2_pca"])
    bayes = report["references"]["pendulum"]  # the generator is known: the limit of both
    assert all(math.isfinite(bayes[k]) for k in ["r2_bayes", *(f"bayes_{k}" for k in RECON_KEYS)])
    assert "| pendulum | bayes (the limit) |" in (tmp_path / "table.md").read_text()
    table = (tmp_path / "table.md").read_text()
    assert "nan" not in table and "finite)" not in table
    assert all((tmp_path / f"gallery_{d}.png").stat().st_size > 10_000 for d in DATASETS)


PARTIAL_RUNS = [["--quick"], ["--datasets", "pendulum"], ["--methods", "persistent,flow"], ["--seeds", "2"],
                ["--steps", "100"], ["sampler.negative.n_steps=100"]]


@pytest.mark.parametrize("argv", PARTIAL_RUNS, ids=lambda argv: " ".join(argv))
def test_quick_and_partial_runs_write_beside_the_full_results(argv: list[str]) -> None:
    full = paper.output_dir(paper.parse_args([]))
    assert full == RESULTS / "paper"
    out = paper.output_dir(paper.parse_args(argv))
    assert out == RESULTS / "paper" / "quick"
    # Every file a run writes lies directly in its folder: none of the quick run's can be one of the full run's.
    written = ["table.md", "rows.json", "rows.partial.json", *(f"gallery_{d}.png" for d in DATASETS)]
    assert not {out / name for name in written} & {full / name for name in written}


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_quick_results_are_ignored_by_git_and_full_results_are_not() -> None:
    quick = paper.output_dir(paper.parse_args(["--quick"])) / "table.md"
    full = paper.output_dir(paper.parse_args([])) / "table.md"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(quick)], cwd=ROOT).returncode
    kept = subprocess.run(["git", "check-ignore", "-q", str(full)], cwd=ROOT).returncode
    assert (ignored, kept) == (0, 1)


SWEEP_STARTS = {"collapsed": ["neighbours", "prior"], "joint": ["neighbours", "prior"], "no_latent": ["neighbours"],
                "flow": ["knn"]}


@pytest.mark.slow
def test_quick_ladder_reconstructs_every_variant_with_every_method(tmp_path: Path) -> None:
    """``--sweep ladder --quick``: each variant's training split has the size its label says, every method's
    reconstruction from every start is scored, and k-NN and the Bayes limit sit beside them in the table."""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.paper", "--sweep", "ladder", "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=900, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "rows.json").read_text())
    labels = [v["label"] for v in report["variants"]]
    assert labels == [v.label for v in paper.sweeps.QUICK_SWEEPS["ladder"]]
    rows = {(r["variant"], r["method"]): r for r in report["rows"]}
    assert set(rows) == {(v, m) for v in labels for m in SWEEP_STARTS}
    for (variant, method), row in rows.items():
        assert row["status"] == "ok", (variant, method, row["status"])
        for start in SWEEP_STARTS[method]:
            for key in [*RECON_KEYS, "recon_s"]:
                assert math.isfinite(row[start][key]), (variant, method, start, key)
        if method in ("collapsed", "joint"):
            assert 0.0 <= row["r2_posterior"] <= 1.0, (variant, method)
    for variant in labels:
        ref = report["references"][variant]
        assert all(math.isfinite(ref[k][m]) for k in ("knn", "bayes") for m in RECON_KEYS), variant
        assert 0.9 < ref["r2_bayes"] <= 1.0
    table = (tmp_path / "table.md").read_text()
    for variant in labels:
        assert f"| {variant} | bayes (the limit) |" in table and f"| {variant} | flow | k-NN samples |" in table
    assert "| nan" not in table


def test_sweep_variants_hide_what_they_say() -> None:
    """The ladder changes only the training size; the dimension sweep hides the second half of each trajectory
    and the central block of each lattice, and its runs compose with the variant's options."""
    ladder = paper.sweeps.SWEEPS["ladder"]
    assert [v.data for v in ladder] == [(f"data.n_train={n}",) for n in (500, 1000, 2000, 5000, 20000)]
    assert all(v.hidden == tuple(range(8, 16)) for v in ladder)
    pend64, phi16 = paper.sweeps.pendulum(64), paper.sweeps.phi4(16)
    assert pend64.hidden == tuple(range(32, 64)) and pend64.data == ("data.options.n_obs=64",)
    assert not paper.sweeps.applies(phi16, "flow") and paper.sweeps.applies(pend64, "flow")
    assert not paper.sweeps.applies(phi16, "joint") and paper.sweeps.applies(pend64, "joint")
    assert len(phi16.hidden) == 64 and min(phi16.hidden) == 4 * 16 + 4 and max(phi16.hidden) == 11 * 16 + 11
    overrides = paper.run_overrides("pendulum", "collapsed", 0, paper.QUICK, ["data.n_train=700"],
                                    paper.sweeps.METHODS["joint"])
    assert "data.n_train=700" in overrides and "data.n_train=1500" not in overrides  # the later value wins
    assert "sampler.collapsed=false" in overrides


def test_sweep_rejects_methods_it_does_not_have() -> None:
    with pytest.raises(SystemExit):
        paper.parse_args(["--sweep", "ladder", "--methods", "short_run"])
    args = paper.parse_args(["--sweep", "dimension"])
    assert args.methods == paper.sweeps.DEFAULT_METHODS["dimension"]
    assert paper.output_dir(args) == RESULTS / "paper_dimension"
    quick = paper.output_dir(paper.parse_args(["--sweep", "dimension", "--quick"]))
    assert quick == RESULTS / "paper_dimension" / "quick"


@pytest.mark.slow
def test_quick_dimension_sweep_runs_the_longer_trajectories_and_the_larger_lattice(tmp_path: Path) -> None:
    """``--sweep dimension --quick``: the 32-time pendulum and the 16 x 16 lattice train and reconstruct, the
    amortised rows carry their encoder's R² beside the posterior's, and the flow is left out of the lattice."""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.paper", "--sweep", "dimension", "--quick", "--methods",
         "collapsed,amortised,flow", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=900, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "rows.json").read_text())
    rows = {(r["variant"], r["method"]): r for r in report["rows"]}
    assert set(rows) == {("pendulum 32 times", m) for m in ("collapsed", "amortised", "flow")} | {
        ("phi4 16x16", m) for m in ("collapsed", "amortised")}
    assert all(r["status"] == "ok" for r in rows.values())
    amortised = rows["pendulum 32 times", "amortised"]
    assert 0.0 <= amortised["r2_posterior"] <= 1.0 and 0.0 <= amortised["r2_encoder"] <= 1.0
    for method in ("collapsed", "amortised"):
        assert all(math.isfinite(rows["phi4 16x16", method][s]["recon_rmse"]) for s in ("neighbours", "prior"))
    assert "bayes" not in report["references"]["phi4 16x16"]
