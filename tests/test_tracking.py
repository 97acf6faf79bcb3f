"""Experiment tracking with real W&B (offline): flat config, resumed runs, Hydra multirun and W&B sweeps."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
import yaml
from wandb.sdk.launch.sweeps import utils as sweep_utils
from wandb.sdk.lib import config_util

from lvebm_lightning.config.validation import validate
from lvebm_lightning.training.run import train
from lvebm_lightning.training.tracking import STEP_KEY, LVEBMWandbLogger, flatten_config, resume_state
from tests.conftest import compose_config
from tests.helpers.wandb_records import OfflineRun, read_offline_run

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "conf" / "sweep").glob("*.yaml"))


def offline_runs(run_dir: Path) -> list[OfflineRun]:
    return [read_offline_run(p) for p in sorted((run_dir / "wandb").glob("offline-run-*"))]


def logged_keys(row: dict) -> set[str]:
    """The metrics of a history row; a logged image shows as several keys (``gallery/x/_type``...) and counts once."""
    images = {k[: -len("/_type")] for k in row if k.endswith("/_type")}
    plain = {k for k in row if not k.startswith("_") and k != STEP_KEY}
    plain = {k for k in plain if not any(k.startswith(f"{i}/") for i in images)}
    return plain | images


def steps_by_key(runs: list[OfflineRun]) -> dict[str, list[int]]:
    """For every logged metric, the trainer/global_step of each value, in logging order over ``runs``."""
    steps: dict[str, list[int]] = {}
    for run in runs:
        for row in run.history:
            for key in logged_keys(row):
                steps.setdefault(key, []).append(row[STEP_KEY])
    return steps


# -- config ------------------------------------------------------------------------------------------------------
def test_config_is_logged_flat_under_the_names_one_overrides(make_cfg):
    cfg = make_cfg("sampler.negative.batch_size=32")
    flat = flatten_config(cfg)
    assert flat["sampler.posterior.step_size"] == cfg.sampler.posterior.step_size
    assert flat["model.lr"] == cfg.model.lr and flat["model.optimizer.betas"] == [0.0, 0.999]
    assert flat["paths.output_dir"] == cfg.paths.output_dir  # a resolver, not a copy: kept
    assert flat["sampler.negative.batch_size"] == 32  # overridden, so no longer a copy of data.batch_size
    # Keys that only copy another one are left out, so each knob appears once.
    for copy in ("model.optimizer.lr", "model.posterior.step_size", "data.seed", "callbacks.negative_pool.pool_size"):
        assert copy not in flat
    assert not any(isinstance(v, dict) for v in flat.values())
    json.dumps(flat)


# -- the logger on its own ---------------------------------------------------------------------------------------
def test_logger_drops_values_at_steps_the_run_already_logged(tmp_path):
    logger = LVEBMWandbLogger(save_dir=str(tmp_path), project="t", mode="offline", id="stepsrun",
                              logged_steps={"a": 5, "b": 3})
    logger.log_metrics({"a": 1.0, "b": 1.0, "c": 1.0}, step=3)  # b, a already at step 3: only c
    logger.log_metrics({"a": 2.0, "b": 2.0}, step=5)  # a already at 5: only b
    logger.log_metrics({"a": 3.0}, step=6)
    logger.log_metrics({"c": 4.0}, step=3)  # c was just logged at 3
    record = json.loads(logger.step_file.read_text())
    logger.experiment.finish()
    (run,) = offline_runs(tmp_path)
    assert [(r[STEP_KEY], logged_keys(r)) for r in run.history] == [(3, {"c"}), (5, {"b"}), (6, {"a"})]
    assert record == {"run_id": "stepsrun", "steps": {"a": 6, "b": 5, "c": 3}}
    # Resuming from a checkpoint that saw less: the step file's later steps win, key by key.
    ckpt = {"wandb_run_id": "stepsrun", "wandb_logged_steps": {"a": 4, "d": 9},
            "wandb_step_file": str(logger.step_file)}
    assert resume_state(ckpt) == {"id": "stepsrun", "logged_steps": {"a": 6, "b": 5, "c": 3, "d": 9},
                                  "logged_steps_complete": True}
    ckpt["wandb_step_file"] = str(tmp_path / "moved.json")
    assert resume_state(ckpt)["logged_steps_complete"] is False


# -- a crashed run, resumed --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_resumed_run_continues_the_same_wandb_run_without_logging_a_step_twice(make_cfg, tmp_path):
    common = ["trainer.max_steps=20", "trainer.val_check_interval=10", "trainer.log_every_n_steps=2", "test=false",
              "logger.wandb.tags=[resume-test]", "logger.wandb.group=g1"]
    crashed = make_cfg(*common, "+callbacks.crash._target_=tests.helpers.crash.CrashAtStep", "+callbacks.crash.step=15",
                       run="a")
    with pytest.raises(RuntimeError, match="simulated crash at step 15"):
        train(crashed)
    ckpt_path = tmp_path / "a" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 10
    assert ckpt["config"]["sampler"]["posterior"]["step_size"] == 0.01  # the resolved config, plain types
    (first,) = offline_runs(tmp_path / "a")
    assert ckpt["wandb_run_id"] == first.run_id and first.exit_code == 1
    # The crash came after steps past the checkpoint were logged: the case a resume must not repeat.
    assert max(steps_by_key([first])["train/loss"]) > ckpt["global_step"]

    train(make_cfg(*common, f"ckpt_path={ckpt_path}", "logger.wandb.log_model=true", run="b"))
    (second,) = offline_runs(tmp_path / "b")
    assert second.run_id == first.run_id  # offline: a new folder with the same id; `wandb sync` joins them
    assert second.tags == ["resume-test"] and second.group == "g1"
    steps = steps_by_key([first, second])
    for key, logged in steps.items():
        assert logged == sorted(set(logged)), f"{key} logged at steps {logged}"
    # Nothing is lost either: the training loss every 2 steps, and a validation at steps 10 and 20.
    loss = steps["train/loss"]
    assert len(loss) == 10 and set(b - a for a, b in zip(loss, loss[1:])) == {2}
    assert len(steps["val/w2"]) == 2 and len(steps["gallery/samples"]) == 2
    assert {"train/loss", "val/w2", "gallery/samples"} <= set(steps_by_key([second]))
    # The final summary and the checkpoint as an artifact (logger.wandb.log_model=true).
    assert second.summary["final/split"] == "val" and Path(second.summary["best/checkpoint"]).is_file()
    # Resumed into a new directory, Lightning's ModelCheckpoint keeps the old best path but not its score, so the
    # best is that of the validations since the resume.
    best = min(r["val/w2"] for r in second.history if "val/w2" in r)
    assert second.summary["best/val_w2"] == pytest.approx(best, rel=1e-6)
    assert ("model", f"model-{first.run_id}") in second.artifacts
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["last/checkpoint"].endswith("last.ckpt")


# -- Hydra multirun ----------------------------------------------------------------------------------------------
FAST = ["debug=fast", "trainer.accelerator=cpu", "trainer.max_steps=4", "trainer.val_check_interval=4",
        "sampler.long_chains.n_steps=10", "~callbacks.gallery", "test=false"]


@pytest.mark.slow
def test_hydra_multirun_gives_each_job_its_directory_and_wandb_run(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "train.py", "-m", "model.lr=1e-3,3e-4", *FAST, f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {}
    for job in ("0", "1"):
        assert (tmp_path / job / "metrics.csv").is_file()
        # The console says where everything is.
        assert f"  metrics     {(tmp_path / job).resolve() / 'metrics.csv'}" in done.stdout + done.stderr
        (run,) = offline_runs(tmp_path / job)
        runs[run.config["model.lr"]] = run
    assert set(runs) == {1e-3, 3e-4}
    assert len({r.run_id for r in runs.values()}) == 2 and all(r.exit_code == 0 for r in runs.values())
    ddp = subprocess.run(
        [sys.executable, "train.py", "-m", "model.lr=1e-3,3e-4", "trainer=ddp_cpu", *FAST,
         f"hydra.sweep.dir={tmp_path / 'ddp'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
    )
    assert ddp.returncode == 2
    assert "Hydra multirun (-m) cannot launch DDP (trainer.devices=2, trainer.strategy=ddp)" in ddp.stderr
    assert not (tmp_path / "ddp" / "0" / "checkpoints").exists()


# -- W&B sweeps --------------------------------------------------------------------------------------------------
def draw(spec: dict, rng: random.Random) -> object:
    """A value from one W&B sweep parameter's space, as the sweep controller would propose one."""
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return rng.choice(spec["values"])
    kind = spec.get("distribution", "int_uniform" if isinstance(spec["min"], int) else "uniform")
    lo, hi = spec["min"], spec["max"]
    if kind == "int_uniform":
        return rng.randint(lo, hi)
    if kind == "uniform":
        return rng.uniform(lo, hi)
    if kind == "log_uniform_values":
        return lo * (hi / lo) ** rng.random()
    raise AssertionError(f"draw() does not know the distribution {kind!r}: teach it")


def extremes(spec: dict) -> list[object]:
    if "values" in spec:
        return list(spec["values"])
    return [spec["value"]] if "value" in spec else [spec["min"], spec["max"]]


def agent_command(sweep: dict, args: dict[str, object]) -> list[str]:
    """The command line W&B's agent runs for one trial (wandb_agent.Agent._command_run, not a function of its own)."""
    run_args = {name: {"value": value} for name, value in args.items()}
    sweep_vars = sweep_utils.create_sweep_command_args({"args": run_args})
    sweep_vars.update(interpreter=["python"], program=[sweep["program"]], env=["/usr/bin/env"])
    command: list[str] = []
    for chunk in sweep_utils.create_sweep_command(sweep.get("command")):
        chunk = str(chunk)
        command += (sweep_vars.get(chunk[2:-1]) or []) if chunk.startswith("${") and chunk.endswith("}") else [chunk]
    return command


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_every_value_of_a_sweep_is_a_valid_config(path, tmp_path):
    sweep = yaml.safe_load(path.read_text())
    assert sweep["metric"]["name"] == "val/w2" and sweep["metric"]["goal"] == "minimize"
    assert "${args_no_hyphens}" in sweep["command"] and "${args}" not in sweep["command"]
    for name, spec in sweep["parameters"].items():
        for value in extremes(spec):
            validate(compose_config(tmp_path, [f"{name}={value}"]))


@pytest.mark.slow
@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_wandb_agent_command_runs_train_py(path, tmp_path):
    """Run train.py with the exact command line the agent builds from values drawn from the sweep's space, in the
    agent's environment (W&B offline), a few steps long; the last sweep file's trial runs on 2 DDP processes."""
    sweep = yaml.safe_load(path.read_text())
    args = {name: draw(spec, random.Random(path.stem)) for name, spec in sweep["parameters"].items()}
    command = agent_command(sweep, args)
    assert command[:3] == ["/usr/bin/env", "python", "train.py"]
    assert command[3 : 3 + len(args)] == [f"{k}={v}" for k, v in args.items()]
    ddp = path == SWEEPS[-1]
    extra = [*FAST, "sampler.long_chains.n_samples=128", *(["trainer=ddp_cpu", "trainer.devices=2"] if ddp else [])]
    assert not {a.split("=")[0] for a in extra} & set(args), "the test must not override a swept key"
    sweep_id, run_id = f"test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:8]
    param_file = tmp_path / "wandb" / f"sweep-{sweep_id}" / f"config-{run_id}.yaml"
    config_util.save_config_file_from_dict(str(param_file), {k: {"value": v} for k, v in args.items()})
    env = {
        **os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "WANDB_SWEEP_ID": sweep_id,
        "WANDB_RUN_ID": run_id, "WANDB_SWEEP_PARAM_PATH": str(param_file), "WANDB_DIR": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # an active venv
    }
    run_dir = ROOT / "outputs" / "sweeps" / sweep_id
    try:
        done = subprocess.run([*command, *extra], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        (run,) = offline_runs(run_dir / run_id)  # one W&B run per trial, DDP or not
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        for parent in (run_dir.parent, run_dir.parent.parent):  # outputs/sweeps, outputs: only if left empty
            with contextlib.suppress(OSError):
                parent.rmdir()
    assert run.run_id == run_id and run.sweep_id == sweep_id
    for name, value in args.items():
        assert run.config[name] == pytest.approx(value), name
    assert any(sweep["metric"]["name"] in row for row in run.history)
