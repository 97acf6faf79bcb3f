"""Exact resume: n steps, stop, resume for n more equals 2n steps in one go, bit for bit (CPU, one process).

Every run goes through the real ``train(cfg)``: the real Trainer, ModelCheckpoint, the atomic checkpoint IO,
validation with the metrics callback (which must not perturb training noise), the resumable data order and
the checkpoint guard. The stop happens at a validation step, at the end of an epoch, after a skipped
(non-finite) update, and by a real SIGTERM.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from google.protobuf.message import DecodeError
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lvebm_lightning.training.run import train
from tests.conftest import compose_config
from tests.helpers.checkpoints import assert_identical, training_state
from tests.helpers.faults import RestoreProbe
from tests.helpers.wandb_records import OfflineRun, read_offline_run

N_STEPS = 20  # 2n; 8 batches an epoch (debug=fast: 512 data, batch 64), validation every 6 batches
BASE = [
    "logger=csv", "~callbacks.gallery", "test=false", f"trainer.max_steps={N_STEPS}", "trainer.val_check_interval=6",
    "callbacks.model_checkpoint.every_n_train_steps=2", "+trainer.enable_progress_bar=false",
]


def poison(batch: int | None) -> list[str]:
    if batch is None:
        return []
    return ["+callbacks.poison._target_=tests.helpers.faults.PoisonLatents", f"+callbacks.poison.batch={batch}"]


def stop(step: int, sigterm: bool) -> list[str]:
    return ["+callbacks.stop._target_=tests.helpers.faults.StopAt", f"+callbacks.stop.step={step}",
            f"+callbacks.stop.sigterm={sigterm}"]


_references: dict[tuple[int | None, tuple[str, ...]], Path] = {}


@pytest.fixture
def reference(tmp_path_factory):
    """last.ckpt of the uninterrupted 2n-step run (computed once per poisoned batch and extra overrides)."""

    def get(poison_batch: int | None, extra: tuple[str, ...] = ()) -> Path:
        if (poison_batch, extra) not in _references:
            run = tmp_path_factory.mktemp("reference")
            train(compose_config(run, BASE + poison(poison_batch) + list(extra)))
            _references[poison_batch, extra] = run / "checkpoints" / "last.ckpt"
        return _references[poison_batch, extra]

    return get


COMPILED = ("sampler.compile=true",)  # the default outside debug=fast: compiled chains resume bit for bit too
CASES = {
    # name: (stop after step n, by SIGTERM, batch whose latent particles are poisoned, extra overrides)
    "stop_at_a_validation_step": (12, False, None, ()),
    "stop_at_the_end_of_an_epoch": (8, False, None, ()),
    "stop_after_a_skipped_update": (10, False, 3, ()),
    "sigterm_after_validation_with_a_skipped_update": (11, True, 3, ()),
    # last.ckpt then comes from the SIGTERM save alone: the resumed run must still write last.ckpt, not
    # last-v1.ckpt (ModelCheckpoint's version counter would leave a stale last.ckpt to resume from next time).
    "sigterm_before_the_first_periodic_checkpoint": (1, True, None, ()),
    "compiled_chains_stop_at_a_validation_step": (12, False, None, COMPILED),
}


@pytest.mark.parametrize("case", list(CASES))
def test_n_plus_n_steps_equal_2n_steps_bit_for_bit(case, reference, tmp_path):
    n, sigterm, poison_batch, extra = CASES[case]
    first = tmp_path / "first"
    cfg = compose_config(first, BASE + poison(poison_batch) + stop(n, sigterm) + list(extra))
    if sigterm:
        with pytest.raises(SIGTERMException, match=f"stopped by SIGTERM at step {n}"):
            train(cfg)
    else:
        train(cfg)
    saved_path = first / "checkpoints" / "last.ckpt"
    saved = training_state(saved_path)
    assert saved["global_step"] == n
    assert saved["skipped_steps"] == (0 if poison_batch is None else 1)

    resumed = first  # in place, as after a pre-emption: ``python train.py ckpt_path=<run>/checkpoints/last.ckpt``
    RestoreProbe.seen = {}
    train(compose_config(resumed, BASE + poison(poison_batch) + list(extra) + [
        f"ckpt_path={saved_path}", "+callbacks.probe._target_=tests.helpers.faults.RestoreProbe",
    ]))
    # What the resumed run started from is exactly what was saved.
    seen = RestoreProbe.seen
    assert seen["global_step"] == n
    assert_identical(seen["state_dict"], saved["state_dict"], "restored parameters")
    assert_identical(seen["particles"], saved["particles"], "restored particles")
    assert_identical(seen["pool"], saved["pool"], "restored pool")
    assert_identical([seen["latent_generator"]], saved["latent_generators"], "restored latent generator")
    assert_identical([seen["pool_generator"]], saved["pool_generators"], "restored pool generator")
    # And it ends exactly where the uninterrupted run ends.
    final = training_state(resumed / "checkpoints" / "last.ckpt")
    assert final["global_step"] == N_STEPS
    assert sorted(p.name for p in (resumed / "checkpoints").glob("last*")) == ["last.ckpt"]
    assert_identical(final, training_state(reference(poison_batch, extra)), case)


def read_finished_run(run_dir: Path, timeout: float = 30.0) -> OfflineRun:
    """The offline run's records once its log is complete: W&B's service may still be appending to the
    transaction log for a moment after ``finish()`` returns (a truncated last record, or no run record yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            record = read_offline_run(run_dir)
            if record.run_id:
                return record
        except DecodeError:
            pass
        assert time.monotonic() < deadline, f"{run_dir}: no complete W&B run record after {timeout} s"
        time.sleep(0.2)


def test_a_resumed_run_continues_the_same_wandb_run(tmp_path):
    """W&B offline: the checkpoint records the run id (and the resolved config, as plain containers that
    ``weights_only=True`` loads) and the resumed run logs to that same id."""
    wandb_run = [o for o in BASE if o != "logger=csv"] + ["logger=wandb"]
    train(compose_config(tmp_path / "first", wandb_run + stop(4, False)))
    saved_path = tmp_path / "first" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(saved_path, weights_only=True)
    (first_run,) = (tmp_path / "first" / "wandb").glob("offline-run-*")
    run_id = read_finished_run(first_run).run_id
    assert run_id and ckpt["wandb_run_id"] == run_id
    assert ckpt["config"]["model"]["dz"] == 1 and ckpt["config"]["trainer"]["max_steps"] == N_STEPS

    train(compose_config(tmp_path / "resumed", wandb_run + [f"ckpt_path={saved_path}"]))
    (resumed_run,) = (tmp_path / "resumed" / "wandb").glob("offline-run-*")
    record = read_finished_run(resumed_run)
    assert record.run_id == run_id
    assert min(row["trainer/global_step"] for row in record.history) >= 4


def test_a_chain_of_resumes_equals_one_run(reference, tmp_path):
    """Resumed runs are stopped again: by SIGTERM at an epoch's last batch, then at the next epoch's end (so
    the resumed run saves at an epoch's end), then by SIGTERM mid-epoch. Lightning's epoch counter lags by
    one after a restart at an epoch's end; a data order that followed it replayed an epoch here."""
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    with pytest.raises(SIGTERMException):
        train(compose_config(run, BASE + stop(8, True)))
    train(compose_config(run, BASE + stop(16, False) + [f"ckpt_path={last}"]))
    with pytest.raises(SIGTERMException):
        train(compose_config(run, BASE + stop(19, True) + [f"ckpt_path={last}"]))
    train(compose_config(run, BASE + [f"ckpt_path={last}"]))
    assert_identical(training_state(last), training_state(reference(None)), "chain of resumes")


def test_compiled_chains_train_the_model_that_eager_chains_train(reference):
    """The same 2n steps with compiled chains (the default outside debug=fast) and with eager ones: the same noise
    reaches both, so parameters, particles and pool agree to float tolerance, not bit for bit (the compiled graph
    orders its float operations differently)."""
    eager, compiled = training_state(reference(None)), training_state(reference(None, COMPILED))
    assert compiled["global_step"] == eager["global_step"] == N_STEPS
    assert not torch.equal(compiled["pool"], eager["pool"])  # two different code paths ran
    for key in ("particles", "pool"):
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-3, atol=1e-4)
    for name, value in eager["state_dict"].items():
        torch.testing.assert_close(compiled["state_dict"][name], value, rtol=1e-3, atol=1e-5, msg=name)
