"""Divergence guards: non-finite particles, energies or gradients are caught every step, under both policies,
and a run that stops leaves its last good checkpoint intact and resumable."""

from __future__ import annotations

import csv
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from lvebm_lightning.training.checkpointing import CheckpointError
from lvebm_lightning.training.divergence import TrainingDiverged
from lvebm_lightning.training.run import train
from tests.helpers.faults import BlowUpNegativeChains, PoisonLatents

BASE = [
    "logger=csv", "~callbacks.gallery", "~callbacks.metrics", "~callbacks.best_checkpoint", "test=false",
    "trainer.max_steps=12", "callbacks.model_checkpoint.every_n_train_steps=2", "+trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
]
ROOT = Path(__file__).resolve().parents[1]
REMEDIES = ("step_size", "model.lr", "model.alpha", "spectral_norm")


def fault(name: str, **kwargs: object) -> list[str]:
    return [f"+callbacks.fault._target_=tests.helpers.faults.{name}",
            *(f"+callbacks.fault.{k}={v}" for k, v in kwargs.items())]


def csv_columns(path: Path) -> dict[str, list[float]]:
    columns: dict[str, list[float]] = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if value:
                    columns.setdefault(key, []).append(float(value))
    return columns


def test_skip_drops_the_update_reinitialises_the_particles_counts_and_warns(make_cfg):
    cfg = make_cfg(*BASE, *fault("PoisonLatents", batch=5))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg)
    messages = [str(w.message) for w in caught if "Non-finite" in str(w.message)]
    assert len(messages) == 1
    assert "Non-finite latent particles" in messages[0] and "at step 5" in messages[0]
    assert "Skipped the update" in messages[0] and all(r in messages[0] for r in REMEDIES)

    record = PoisonLatents.record
    assert record["step"] == record["step_after"] == 5  # no optimizer step for the poisoned batch
    for before, after in zip(record["before"], record["after"]):
        assert torch.equal(before, after)  # the update was dropped
    assert bool(torch.isfinite(record["particles_after"]).all())  # and the particles re-initialised

    run = Path(cfg.paths.output_dir)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 12 and ckpt["lvebm"]["skipped_steps"] == 1
    # 13 batches for 12 steps: the run still made max_steps updates.
    assert ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["processed"] == 13
    # One row a batch; the skipped batch logs its own non-finite values (the divergence is visible).
    columns = {k: torch.tensor(v) for k, v in csv_columns(run / "metrics.csv").items()}
    good = torch.arange(13) != 5
    for key in ("train/energy_scale", "train/z_norm", "train/neg_norm", "train/grad_norm"):
        assert len(columns[key]) == 13 and bool(torch.isfinite(columns[key][good]).all()), key
    for key in ("train/energy_scale", "train/z_norm", "train/grad_norm"):
        assert not bool(torch.isfinite(columns[key][5])), key
    assert columns["train/skipped_steps"].tolist() == [0.0] * 5 + [1.0] * 8


def test_a_non_finite_parameter_gradient_is_skipped(make_cfg):
    cfg = make_cfg(*BASE, "model.alpha=1.0", *fault("SpikeEnergy", batch=3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg)
    messages = [str(w.message) for w in caught if "Non-finite" in str(w.message)]
    assert len(messages) == 1 and messages[0].startswith("Non-finite parameter gradient at step 3 ")
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 12 and ckpt["lvebm"]["skipped_steps"] == 1


@pytest.mark.parametrize(("policy", "bad_steps"), [("skip", 3), ("raise", 1)])
def test_runaway_negative_chains_stop_the_run_and_keep_the_last_good_checkpoint(make_cfg, policy, bad_steps):
    # A confined energy (gamma = 1) whose joint chains run away from step 6 on (h gamma >> 2).
    cfg = make_cfg(*BASE, "model.energy.gamma=1.0", f"model.divergence.policy={policy}",
                   "model.divergence.max_consecutive=3", *fault("BlowUpNegativeChains", step=6))
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TrainingDiverged) as info:
            train(cfg)
    message = str(info.value)
    assert "\n" not in message
    assert f"Non-finite negative pool, E_neg at step 6 ({bad_steps} bad step(s) in a row)" in message
    assert all(r in message for r in REMEDIES)
    assert message.endswith(f"Training stopped. The last good checkpoint is kept: {last}.")
    skipped = [w for w in caught if "Skipped the update" in str(w.message)]
    assert len(skipped) == bad_steps - 1

    # last.ckpt is byte for byte what it was when the chains began to diverge, and it is usable.
    assert last.read_bytes() == BlowUpNegativeChains.checkpoint_bytes
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 6
    for tensor in [*ckpt["state_dict"].values(), ckpt["lvebm"]["particles"], ckpt["callbacks"]["NegativePool"]["pool"]]:
        assert bool(torch.isfinite(tensor).all())
    assert list(last.parent.glob(".*.tmp")) == []
    resumed = make_cfg(*BASE, "model.energy.gamma=1.0", f"ckpt_path={last}", run="resumed")
    train(resumed)
    assert torch.load(Path(resumed.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)[
        "global_step"] == 12


def test_a_checkpoint_with_non_finite_parameters_is_never_written(make_cfg):
    cfg = make_cfg(*BASE, *fault("CorruptParameters", step=4))
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match=r"Refused to write a checkpoint at step 4: non-finite values in "
                                              r"energy\.net\.0\.weight; the last good checkpoint is kept"):
        train(cfg)
    assert torch.load(last, weights_only=True)["global_step"] == 2


def test_train_py_reports_a_divergence_in_one_line_and_exits_1(tmp_path):
    """A config whose unadjusted joint chains blow up from the first step (h gamma = 1000; MALA would reject
    such moves): nothing good to keep."""
    result = subprocess.run(
        [sys.executable, "train.py", "debug=fast", "trainer.accelerator=cpu", *BASE, "model.energy.gamma=1.0",
         "sampler.negative.step_size=1000", "sampler.negative.n_steps=20", "sampler.negative.kernel=ula",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    last_line = result.stderr.splitlines()[-1]
    assert last_line.startswith("lvebm: training diverged: Non-finite negative pool, E_neg at step 0 (10 bad step")
    assert last_line.endswith("Training stopped. No checkpoint was written yet.")
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
