"""Experiment tracking: what a run tells W&B and the local run directory, and how a resumed run continues.

- **Config.** The resolved Hydra config is logged flat, one key per knob under the name you would override it
  with (``sampler.posterior.step_size``), so that W&B filters, groups and sweeps all use the same names. Keys
  that only copy another key (``model.optimizer.lr: ${model.lr}``) are left out.
- **Resume without repeats.** A run that crashed after its last checkpoint at step S had already logged steps
  S + 1 .. S_crash; resuming from S recomputes and would re-log them, so a W&B chart plotted against
  ``trainer/global_step`` would fold back. ``LVEBMWandbLogger`` keeps, per metric, the last step it logged
  (in the checkpoint, and in a small JSON file that it rewrites on every log call, so that steps logged after
  the last checkpoint are known too) and, resumed, drops each value whose step it has already logged. So every
  metric's steps strictly increase over the whole run, across any number of resumes, online or offline (an
  offline resume writes a new ``offline-run-*`` folder with the same id; ``wandb sync`` uploads those folders
  in order of start time into one run). The values of the re-run steps are those of the first attempt.
  W&B's own alternative, rewinding a run (``resume_from``), is online-only and in private preview.
- **Summary.** At the end: best validation W2 and its checkpoint (Lightning's ``ModelCheckpoint``; resumed into a
  new directory it remembers the old best path but not its score, so the best is then that since the resume),
  the final W2 / NLL / ELBO and reconstruction RMSE (beside the k-NN's) and coverage, where the run's files are; in
  the W&B summary, in ``summary.json`` of the run
  directory, and in a log message that ``train.py`` shows on the console.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, ListConfig, OmegaConf

STEP_KEY = "trainer/global_step"
_REFERENCE = re.compile(r"^\$\{[\w.]+\}$")  # ${a.b.c}: a copy of another key, not a resolver like ${oc.env:X}


# -- config ---------------------------------------------------------------------------------------------------
def flatten_config(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The resolved config as ``{"a.b.c": value}`` with plain values and lists; copies of other keys omitted."""
    if isinstance(cfg, DictConfig):
        return _flatten(OmegaConf.to_container(cfg, resolve=False), OmegaConf.to_container(cfg, resolve=True), "")
    return _flatten({}, cfg, "")


def _flatten(raw: Any, resolved: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in resolved.items():
        unresolved = raw.get(key) if isinstance(raw, Mapping) else None
        if isinstance(unresolved, str) and _REFERENCE.match(unresolved):
            continue
        if isinstance(value, Mapping):
            out.update(_flatten(unresolved, value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# -- the W&B logger ------------------------------------------------------------------------------------------
def wandb_step_file(save_dir: str | Path, run_id: str) -> Path:
    """Where a run's per-metric last logged steps are kept, beside its W&B folders."""
    return Path(save_dir) / "wandb" / f"lvebm-logged-steps-{run_id}.json"


def read_logged_steps(path: str | Path | None, run_id: str) -> dict[str, int] | None:
    """The per-metric last logged steps recorded in ``path`` for ``run_id`` (None if absent or another run's)."""
    if not path or not Path(path).is_file():
        return None
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if record.get("run_id") != run_id:
        return None
    return {str(k): int(v) for k, v in record.get("steps", {}).items()}


class LVEBMWandbLogger(WandbLogger):
    """Lightning's ``WandbLogger`` that never logs a metric twice at one step, across resumes.

    Args:
        logged_steps: per metric, the last ``trainer/global_step`` already logged to this run (from the
            checkpoint and the step file of the run being resumed); values at or before it are dropped.
        logged_steps_complete: whether ``logged_steps`` covers everything logged so far. If not (the step file of
            the crashed attempt was not found) and W&B resumed the run online, the run's own last logged
            ``trainer/global_step`` (its summary) bounds every metric.
        **kwargs: ``WandbLogger`` / ``wandb.init`` arguments (``project``, ``id``, ``mode``, ``tags``, ``group``...).
    """

    def __init__(
        self, *args: Any, logged_steps: Mapping[str, int] | None = None, logged_steps_complete: bool = True,
        **kwargs: Any,
    ) -> None:
        for key in ("tags", "group", "notes"):  # Hydra hands over ListConfig; wandb.init wants plain values
            if isinstance(kwargs.get(key), ListConfig):
                kwargs[key] = OmegaConf.to_container(kwargs[key])
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:  # W&B warns about the setting whenever it is passed
            self._wandb_init.pop("anonymous", None)
        self.resumed_steps = dict(logged_steps or {})
        self.logged_steps: dict[str, int] = dict(self.resumed_steps)
        self._complete = logged_steps_complete
        self._floor: int | None = None  # bound for metrics absent from logged_steps

    @property
    def step_file(self) -> Path | None:
        return wandb_step_file(self.save_dir, self.version) if self.save_dir and self.version else None

    def _default_floor(self) -> int:
        if self._floor is None:
            self._floor = -1
            run = self.experiment
            if not self._complete and getattr(run, "resumed", False):
                self._floor = int(run.summary.get(STEP_KEY, -1))
        return self._floor

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        if step is None:
            super().log_metrics(metrics, step)
            return
        floor = self._default_floor()
        fresh = {k: v for k, v in metrics.items() if step > self.logged_steps.get(k, floor)}
        if not fresh:
            return
        super().log_metrics(fresh, step)
        self.logged_steps.update(dict.fromkeys(fresh, int(step)))
        self._write_step_file()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        if status == "failed" and self._experiment is not None:
            # Lightning calls this when fit / test raise: end the run now, marked failed, so that a later run in
            # this process (a notebook, a Hydra multirun) starts its own instead of reusing this one.
            self._experiment.finish(exit_code=1)

    def _write_step_file(self) -> None:
        """Rewrite the step file atomically (a crash leaves the old or the new one)."""
        path = self.step_file
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump({"run_id": self.version, "steps": self.logged_steps}, f)
        os.replace(tmp, path)


def wandb_logger(trainer: pl.Trainer) -> WandbLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


def checkpoint_state(trainer: pl.Trainer) -> dict[str, Any]:
    """What a checkpoint needs to continue the W&B run: its id, and per metric the last logged step."""
    logger = wandb_logger(trainer)
    if logger is None or logger.version is None:
        return {}
    state: dict[str, Any] = {"wandb_run_id": str(logger.version)}
    if isinstance(logger, LVEBMWandbLogger):
        state["wandb_logged_steps"] = dict(logger.logged_steps)
        state["wandb_step_file"] = str(logger.step_file)
    return state


def resume_state(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """``LVEBMWandbLogger`` arguments that continue the W&B run of checkpoint ``ckpt`` ({} if it has none)."""
    run_id = ckpt.get("wandb_run_id")
    if not run_id:
        return {}
    steps = {str(k): int(v) for k, v in (ckpt.get("wandb_logged_steps") or {}).items()}
    later = read_logged_steps(ckpt.get("wandb_step_file"), run_id)
    for key, step in (later or {}).items():
        steps[key] = max(step, steps.get(key, -1))
    return {"id": run_id, "logged_steps": steps, "logged_steps_complete": later is not None}


# -- the end of a run ----------------------------------------------------------------------------------------
def run_summary(trainer: pl.Trainer, metrics: Mapping[str, float], run_dir: str | Path) -> dict[str, Any]:
    """Best validation W2 and its checkpoint, the final W2 / NLL / ELBO / reconstruction scores (test split if it
    ran), the files."""
    split = "test" if any(k.startswith("test/") for k in metrics) else "val"
    summary: dict[str, Any] = {"run_dir": str(Path(run_dir).resolve())}
    for name in ("w2", "w2_floor", "nll", "elbo", "iw_bound", "recon_rmse", "recon_rmse_knn", "recon_coverage"):
        value = metrics.get(f"{split}/{name}")
        if value is not None and math.isfinite(value):
            summary[f"final/{name}"] = float(value)
    summary["final/split"] = split
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint):
            continue
        if callback.monitor == "val/w2" and callback.best_model_path:
            # Resumed into a new directory, Lightning keeps the old best path but not its score; with no better
            # validation since, the score is unknown and only the path is reported.
            if callback.best_model_score is not None:
                summary["best/val_w2"] = float(callback.best_model_score)
            summary["best/checkpoint"] = str(Path(callback.best_model_path).resolve())
        if callback.last_model_path:
            summary["last/checkpoint"] = str(Path(callback.last_model_path).resolve())
    summary["step"] = int(trainer.global_step)
    return summary


def write_summary(summary: Mapping[str, Any], run_dir: str | Path) -> Path:
    path = Path(run_dir) / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def report(summary: Mapping[str, Any], trainer: pl.Trainer) -> str:
    """A few lines that say where everything of the run is."""
    run_dir = Path(summary["run_dir"])
    lines = [f"Run finished at step {summary['step']}: {run_dir}"]
    values = [f"{k.split('/')[1]} {summary[k]:.4g}" for k in ("final/w2", "final/nll", "final/elbo") if k in summary]
    if values:
        lines.append(f"  {summary['final/split']:<11} " + ", ".join(values))
    if "final/recon_rmse" in summary:
        lines.append(f"  {'recon':<11} rmse {summary['final/recon_rmse']:.4g} (k-NN "
                     f"{summary['final/recon_rmse_knn']:.4g}), 90% coverage {summary['final/recon_coverage']:.3g}")
    if "best/val_w2" in summary:
        lines.append(f"  best        val/w2 {summary['best/val_w2']:.4g}: {summary['best/checkpoint']}")
    elif "best/checkpoint" in summary:
        lines.append(f"  best        {summary['best/checkpoint']}  (before the resume; no better val/w2 since)")
    if "last/checkpoint" in summary:
        lines.append(f"  last        {summary['last/checkpoint']}  (resume: ckpt_path=<this>)")
    if (run_dir / "metrics.csv").is_file():
        lines.append(f"  metrics     {run_dir / 'metrics.csv'}")
    galleries = run_dir / "galleries"
    if galleries.is_dir():
        lines.append(f"  galleries   {galleries}/ ({len(list(galleries.glob('*.png')))} PNG)")
    lines.append(f"  summary     {run_dir / 'summary.json'}")
    logger = wandb_logger(trainer)
    run = getattr(logger, "_experiment", None) if logger is not None else None
    if run is not None:
        folder = Path(run.dir).parent
        if run.offline:
            lines.append(f"  W&B         offline run {run.id}: {folder}  (upload: wandb sync {folder})")
        else:
            lines.append(f"  W&B         {run.url}")
    return "\n".join(lines)
