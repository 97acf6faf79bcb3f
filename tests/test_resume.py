"""Exact resume: n steps, stop, resume for n more equals 2n steps in one go, bit for bit (CPU, one process).

Every run goes through the real ``train(cfg)``: the real Trainer, ModelCheckpoint, the atomic checkpoint IO,
validation with the metrics callback (which must not perturb training noise), the resumable data order and
the checkpoint guard. The stop happens at a validation step, at the end of an epoch, after a skipped
(non-finite) update, and by a real SIGTERM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lvebm_lightning.training import train
from tests.conftest import compose_config
from tests.helpers.faults import RestoreProbe

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


def training_state(path: Path) -> dict[str, Any]:
    """What must continue exactly: parameters, both particle systems, every generator, optimizer, scheduler,
    the data order and the step."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    pool = ckpt["callbacks"]["NegativePool"]
    return {
        "global_step": ckpt["global_step"],
        "state_dict": ckpt["state_dict"],
        "particles": ckpt["lvebm"]["particles"],
        "latent_generators": ckpt["lvebm"]["generator_states"],
        "skipped_steps": ckpt["lvebm"]["skipped_steps"],
        "pool": pool["pool"],
        "pool_generators": pool["generator_states"],
        "optimizer": ckpt["optimizer_states"],
        "scheduler": ckpt["lr_schedulers"],
        "data_order": ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"],
    }


def assert_identical(a: Any, b: Any, where: str = "") -> None:
    """Recursive equality; tensors with ``torch.equal`` (same shape, dtype and every bit of every value)."""
    if isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {sorted(set(a) ^ set(b))}"
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        same = a.dtype == b.dtype and torch.equal(a, b)
        assert same, f"{where} differs"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


_references: dict[int | None, Path] = {}


@pytest.fixture
def reference(tmp_path_factory):
    """last.ckpt of the uninterrupted 2n-step run (computed once per poisoned batch)."""

    def get(poison_batch: int | None) -> Path:
        if poison_batch not in _references:
            run = tmp_path_factory.mktemp("reference")
            train(compose_config(run, BASE + poison(poison_batch)))
            _references[poison_batch] = run / "checkpoints" / "last.ckpt"
        return _references[poison_batch]

    return get


CASES = {
    # name: (stop after step n, by SIGTERM, batch whose latent particles are poisoned)
    "stop_at_a_validation_step": (12, False, None),
    "stop_at_the_end_of_an_epoch": (8, False, None),
    "stop_after_a_skipped_update": (10, False, 3),
    "sigterm_after_validation_with_a_skipped_update": (11, True, 3),
}


@pytest.mark.parametrize("case", list(CASES))
def test_n_plus_n_steps_equal_2n_steps_bit_for_bit(case, reference, tmp_path):
    n, sigterm, poison_batch = CASES[case]
    first = tmp_path / "first"
    cfg = compose_config(first, BASE + poison(poison_batch) + stop(n, sigterm))
    if sigterm:
        with pytest.raises(SIGTERMException, match=f"stopped by SIGTERM at step {n}"):
            train(cfg)
    else:
        train(cfg)
    saved_path = first / "checkpoints" / "last.ckpt"
    saved = training_state(saved_path)
    assert saved["global_step"] == n
    assert saved["skipped_steps"] == (0 if poison_batch is None else 1)

    resumed = tmp_path / "resumed"
    RestoreProbe.seen = {}
    train(compose_config(resumed, BASE + poison(poison_batch) + [
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
    assert_identical(final, training_state(reference(poison_batch)), case)
