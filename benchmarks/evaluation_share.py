"""Evaluation share: where the evaluation time of the default ``python train.py`` goes, against its training time.

    python -m benchmarks.evaluation_share [overrides...]

Runs the default experiment once (``train(cfg)`` on the config ``train.py`` composes, logger=csv so that W&B
start-up is not counted, plus any Hydra overrides given) and times, with ``benchmarks.common.RunTimer``, the
training steps (fit minus validation), every validation and the final test; inside them it times the parts of
an evaluation by wrapping the functions that do them:

- the model's fresh long chains (``model_samples``: n_eval chains of T_eval steps from N(0, I), docs/design.md
  section 5), the quadrature of log Z, the exact W2 distances (model and pool, ``sample_distances``), the W2
  floor's pairs (once per split, ``floor_distances``), the ELBO of the posterior particles, the reconstruction of
  held-out data (``callbacks.reconstruction``, where dx >= 4) and the gallery (its posterior clouds' conditional
  chains, and the figures). A test at the step of the last validation reuses that validation's chains, quadrature
  and ELBO, so they show no time there.

The first validation also compiles the evaluation chains' graphs (the default ``sampler.compile=true``), so each
validation is listed on its own. The target: evaluation (validations and test) at most 15% of the training
time at the default validation interval (docs/design.md section 5). The particle-steps each part moves are
printed beside it (training: steps x B (T_z K + T_n)), with the dense-matmul rate measured in the same run. The
report goes to a new file in ``benchmarks/results/evaluation_share/``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.common import Report, RunTimer, machine, matmul_gflops, report_path

PARTS = (
    ("callbacks.metrics", "EvaluationMetrics", "_start", "chains and quadrature (epoch start)"),
    ("lvebm_lightning.training.module", "LVEBMModule", "model_samples", "  fresh long chains"),
    ("callbacks.metrics", None, "quadrature", "  quadrature of log Z"),
    ("callbacks.metrics", "EvaluationMetrics", "_end", "W2, ELBO, observables (epoch end)"),
    ("callbacks.metrics", None, "sample_distances", "  exact W2 (model, pool)"),
    ("callbacks.metrics", None, "floor_distances", "  W2 floor (its pairs, once per split)"),
    ("callbacks.metrics", "EvaluationMetrics", "_elbo", "  ELBO"),
    ("callbacks.reconstruction", "ReconstructionMetrics", "_score", "conditional generation (dx >= 4)"),
    ("callbacks.gallery", "Gallery", "_draw", "gallery"),
    ("callbacks.gallery", "Gallery", "_posterior", "  posterior clouds (conditional chains)"),
)


class PartTimer:
    """Start time and duration of every call of each wrapped function (``perf_counter``: the phases' clock)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, float]] = []  # (label, start, seconds)
        self._originals: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)  # a function, or one inherited from a base class

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.calls.append((label, start, time.perf_counter() - start))

        self._originals.append((owner, name, owner.__dict__.get(name)))
        setattr(owner, name, timed)

    def restore(self) -> None:
        for owner, name, own in reversed(self._originals):
            if own is None:
                delattr(owner, name)  # inherited: the base class's function shows through again
            else:
                setattr(owner, name, own)

    def within(self, start: float, end: float) -> dict[str, float]:
        """Seconds per label of the calls that started in ``[start, end]``."""
        seconds: dict[str, float] = defaultdict(float)
        for label, t, dt in self.calls:
            if start <= t <= end:
                seconds[label] += dt
        return seconds


def main() -> None:
    from lvebm_lightning.config.compose import compose_config
    from lvebm_lightning.training.run import train

    overrides = sys.argv[1:]
    if any(a.startswith("-") for a in overrides):
        sys.exit(__doc__.split("\n\n")[1])
    os.environ.setdefault("WANDB_MODE", "offline")
    parts = PartTimer()
    for module_name, owner_name, name, label in PARTS:
        module = importlib.import_module(module_name)
        parts.wrap(getattr(module, owner_name) if owner_name else module, name, label)
    gflops = [matmul_gflops("cpu")]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(Path(tmp) / "run",
                             ["logger=csv", "+callbacks.timer._target_=benchmarks.common.RunTimer", *overrides])
        RunTimer.runs.clear()
        start = time.perf_counter()
        metrics = train(cfg)
        wall = time.perf_counter() - start
        (timer,) = RunTimer.runs
    parts.restore()
    gflops.append(matmul_gflops("cpu"))
    steps = timer.global_step
    train_s = timer.phase_s("fit") - timer.phase_s("validation")
    evaluation_s = timer.phase_s("validation") + timer.phase_s("test")
    posterior, negative, chains = cfg.sampler.posterior, cfg.sampler.negative, cfg.sampler.long_chains
    train_moves = steps * cfg.data.batch_size * (posterior.n_steps * posterior.n_particles + negative.n_steps)
    chain_moves = chains.n_samples * chains.n_steps
    gallery = cfg.callbacks.get("gallery")
    if gallery is not None:  # its posterior clouds: n_posterior data x n_posterior_particles chains of n_steps
        from callbacks.gallery import Gallery

        defaults = {k: v.default for k, v in inspect.signature(Gallery).parameters.items()}
        per_datum = gallery.get("n_posterior_particles", defaults["n_posterior_particles"])
        cloud_moves = gallery.n_posterior * per_datum * gallery.get("n_steps", defaults["n_steps"])
    rows = [("training steps (fit minus validation)", f"{train_s:.2f}", "100.0")]
    evaluations = [p for p in timer.phases if p.name in ("validation", "test")]
    for i, phase in enumerate(evaluations, 1):
        seconds, inside = phase.end - phase.start, parts.within(phase.start, phase.end)
        name = f"validation {i} (step {phase.step})" if phase.name == "validation" else "test"
        rows.append((name, f"{seconds:.2f}", f"{100 * seconds / train_s:.1f}"))
        for *_, label in PARTS:  # in the order of PARTS: each part, then what it contains
            if label in inside:
                nested = "- - " if label.startswith("  ") else "- "  # a part of the phase, or a part of that part
                rows.append((nested + label.strip(), f"{inside[label]:.2f}", f"{100 * inside[label] / train_s:.1f}"))
    rows.append(("evaluation in all (validations and test; target <= 15)", f"{evaluation_s:.2f}",
                 f"{100 * evaluation_s / train_s:.1f}"))
    final = {k: round(float(v), 4) for k, v in metrics.items() if k in ("test/w2", "test/nll", "test/elbo")}
    with Report(report_path("evaluation_share")) as report:
        report.line(f"{machine('cpu', gflops)}, before and after")
        report.line(f"# python train.py {' '.join(['logger=csv', *overrides])}: {steps} steps, wall {wall:.1f} s")
        report.line(f"# training steps move {train_moves:.3g} particle-steps; one validation's fresh chains "
                    f"{chain_moves:.3g} (n_eval {chains.n_samples} x T_eval {chains.n_steps})"
                    + (f", the gallery's posterior clouds {cloud_moves:.3g}" if gallery is not None else ""))
        report.table(("part", "seconds", "% of training"), rows)
        report.line(f"# final {final}")


if __name__ == "__main__":
    main()
