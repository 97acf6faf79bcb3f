"""Evaluation share: where the evaluation time of the default ``python train.py`` goes, against its training time.

    python benchmarks/evaluation_share.py [overrides...]

Runs the default experiment once (``train(cfg)`` on the config ``train.py`` composes, logger=csv so that W&B
start-up is not counted, plus any Hydra overrides given) and times, with the phase timer of ``quality.py``, the
training steps (fit minus validation), every validation and the final test; inside them it times the parts of
an evaluation by wrapping the functions that do them:

- the model's fresh long chains (``model_samples``: n_eval chains of T_eval steps from N(0, I), docs/design.md
  section 5), the quadrature of log Z, the exact W2 distances (model, pool and floor, ``sample_distances``), the
  ELBO of the posterior particles, the reconstruction of held-out data (``callbacks.reconstruction``, where dx >= 4)
  and the gallery (its posterior clouds' conditional chains, and the figures).

The first validation also compiles the evaluation chains' graphs (the default ``sampler.compile=true``), so each
validation is listed on its own. The issue's target: evaluation (validations and test) at most 10% of the
training time at the default validation interval. The particle-steps each part moves are printed beside it
(training: steps x B (T_z K + T_n)), with the dense-matmul rate measured in the same run.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.quality import PhaseTimer  # noqa: E402  (sets WANDB_MODE=offline too)
from benchmarks.speed import matmul_gflops  # noqa: E402

PARTS = (
    ("callbacks.metrics", "EvaluationMetrics", "_start", "chains and quadrature (epoch start)"),
    ("lvebm_lightning.training.module", "LVEBMModule", "model_samples", "  fresh long chains"),
    ("callbacks.metrics", None, "quadrature", "  quadrature of log Z"),
    ("callbacks.metrics", "EvaluationMetrics", "_end", "W2, ELBO, observables (epoch end)"),
    ("callbacks.metrics", None, "sample_distances", "  exact W2 (model, pool, floor)"),
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


class EvaluationPhases(PhaseTimer):
    """``PhaseTimer`` that also writes each validation's and the test's start and end (``perf_counter``)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.phases: list[tuple[str, float, float]] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        name = f"validation {len(self.phases) + 1} (step {trainer.global_step})"
        self.phases.append((name, self._start["validation"], time.perf_counter()))

    def on_test_end(self, trainer, pl_module) -> None:
        self.phases.append(("test", self._start["test"], time.perf_counter()))
        super().on_test_end(trainer, pl_module)

    def _write(self) -> None:
        self.path.write_text(json.dumps({**self.times, "steps": self.steps, "phases": self.phases}))


def main() -> None:
    import importlib

    from omegaconf import open_dict

    from lvebm_lightning.config.compose import compose_config
    from lvebm_lightning.training.run import train

    overrides = sys.argv[1:]
    if any(a.startswith("-") for a in overrides):
        sys.exit(__doc__.split("\n\n")[1])
    parts = PartTimer()
    for module_name, owner_name, name, label in PARTS:
        module = importlib.import_module(module_name)
        parts.wrap(getattr(module, owner_name) if owner_name else module, name, label)
    gflops = [matmul_gflops("cpu")]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(Path(tmp) / "run", ["logger=csv", *overrides])
        timings = Path(tmp) / "timings.json"
        with open_dict(cfg):
            cfg.callbacks.phase_timer = {"_target_": "benchmarks.evaluation_share.EvaluationPhases",
                                         "path": str(timings)}
        start = time.perf_counter()
        metrics = train(cfg)
        wall = time.perf_counter() - start
        timer = json.loads(timings.read_text())
    parts.restore()
    gflops.append(matmul_gflops("cpu"))
    steps = timer["steps"]
    train_s = timer["fit"] - timer["validation"]
    evaluation_s = timer["validation"] + timer["test"]
    posterior, negative, chains = cfg.sampler.posterior, cfg.sampler.negative, cfg.sampler.long_chains
    train_moves = steps * cfg.data.batch_size * (posterior.n_steps * posterior.n_particles + negative.n_steps)
    chain_moves = chains.n_samples * chains.n_steps
    gallery = cfg.callbacks.get("gallery")
    if gallery is not None:  # its posterior clouds: n_posterior data x n_posterior_particles chains of T_eval steps
        from callbacks.gallery import Gallery

        default = inspect.signature(Gallery).parameters["n_posterior_particles"].default
        cloud_moves = gallery.n_posterior * gallery.get("n_posterior_particles", default) * chains.n_steps
    print(f"# python train.py {' '.join(['logger=csv', *overrides])}: {steps} steps, wall {wall:.1f} s; dense "
          f"matmul {min(gflops):.0f}-{max(gflops):.0f} GFLOP/s (2048^2 float32, before and after)")
    print(f"# training steps move {train_moves:.3g} particle-steps; one validation's fresh chains "
          f"{chain_moves:.3g} (n_eval {chains.n_samples} x T_eval {chains.n_steps})"
          + (f", the gallery's posterior clouds {cloud_moves:.3g}" if gallery is not None else ""))
    print(f"{'part':<44} {'seconds':>8} {'% of training':>14}")
    print(f"{'training steps (fit minus validation)':<44} {train_s:>8.2f} {100.0:>14.1f}")
    for phase, begin, end in timer["phases"]:
        seconds, inside = end - begin, parts.within(begin, end)
        print(f"{phase:<44} {seconds:>8.2f} {100 * seconds / train_s:>14.1f}")
        for *_, label in PARTS:  # in the order of PARTS: each part, then what it contains
            if label in inside:
                part_s = inside[label]
                print(f"  {label:<42} {part_s:>8.2f} {100 * part_s / train_s:>14.1f}")
    print(f"{'evaluation in all (validations and test)':<44} {evaluation_s:>8.2f} {100 * evaluation_s / train_s:>14.1f}"
          "   (target <= 10)")
    final = {k: round(float(v), 4) for k, v in metrics.items() if k in ("test/w2", "test/nll", "test/elbo")}
    print(f"# final {final}")


if __name__ == "__main__":
    main()
