"""Evaluation does nothing twice (callbacks/metrics.py): the W2 floor once per split, and the final test at the
step of the last validation reusing what does not depend on the split (quadrature of log Z, ELBO rows, the
model samples' observables).

The callback's own functions are counted by wrappers that call them unchanged, on a real 20-step training run
with validations at steps 10 and 20 and the test at step 20."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

import callbacks.metrics as metrics_callback
from lvebm_lightning.training.run import train


def _columns(path: Path) -> dict[str, list[float]]:
    columns: dict[str, list[float]] = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if value:
                    columns.setdefault(key, []).append(float(value))
    return columns


@pytest.fixture
def counted(monkeypatch) -> Counter:
    calls: Counter = Counter()
    for name in ("floor_distances", "quadrature", "posterior_bounds"):
        original = getattr(metrics_callback, name)

        def wrapper(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(metrics_callback, name, wrapper)
    return calls


def test_the_floor_is_computed_once_per_split_and_the_test_reuses_the_last_validation(make_cfg, counted, one_thread):
    cfg = make_cfg("trainer.max_steps=20", "trainer.val_check_interval=10", "logger=csv", "~callbacks.gallery")
    train(cfg)
    assert counted == {"floor_distances": 2, "quadrature": 2, "posterior_bounds": 2}  # val + test; steps 10, 20
    c = _columns(Path(cfg.paths.output_dir) / "metrics.csv")
    assert len(c["val/w2"]) == 2 and len(c["test/w2"]) == 1
    for stage in ("val", "test"):
        assert len(set(c[f"{stage}/w2_floor"])) == 1 and len(set(c[f"{stage}/w2_floor_sd"])) == 1
        assert all(0.0 < sd < floor for sd, floor in zip(c[f"{stage}/w2_floor_sd"], c[f"{stage}/w2_floor"]))
        assert c[f"{stage}/w2_ratio"] == pytest.approx([w / c[f"{stage}/w2_floor"][0] for w in c[f"{stage}/w2"]])
    assert c["val/w2_floor"] != c["test/w2_floor"]  # each split has its own
    for key in ("elbo", "iw_bound", "train_log_lik", "quadrature_edge_mass", "obs/right_well_mass"):  # the model's
        assert c[f"test/{key}"][0] == c[f"val/{key}"][-1], key
