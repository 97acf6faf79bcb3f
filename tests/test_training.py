"""End-to-end training with real Lightning trainers, the real Hydra config and W&B offline."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from lvebm_lightning.training.run import build_model, instantiate_callbacks, train
from tests.helpers.wandb_records import read_offline_run

ROOT = Path(__file__).resolve().parents[1]


class Snapshot(pl.Callback):
    """Copies parameters, the touched particles and the whole pool around the first training step."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        _, index = batch
        self.index = index.clone()
        self.params = [p.detach().clone() for p in pl_module.energy.parameters()]
        self.z = pl_module.posterior.store.get(index).clone()
        self.pool = pl_module.negative_pool.pool.clone()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.params_after = [p.detach().clone() for p in pl_module.energy.parameters()]
        self.z_after = pl_module.posterior.store.get(self.index).clone()
        self.store_after = pl_module.posterior.store.values.clone()
        self.pool_after = pl_module.negative_pool.pool.clone()
        self.grads = [p.grad for p in pl_module.energy.parameters()]
        trainer.should_stop = True


def test_one_training_step_moves_parameters_and_both_particle_systems(make_cfg):
    cfg = make_cfg("trainer.max_steps=1", "logger=csv", "~callbacks.gallery", "~callbacks.metrics",
                   "~callbacks.best_checkpoint")
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data).prepare()
    model = build_model(cfg, datamodule)
    snap = Snapshot()
    trainer = instantiate(cfg.trainer, callbacks=[*instantiate_callbacks(cfg.callbacks), snap], logger=False)
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 1
    assert any(not torch.equal(a, b) for a, b in zip(snap.params, snap.params_after))
    # Every particle of the batch moved; the conditional kernel adds fresh noise to each one.
    assert bool((snap.z_after != snap.z).any(dim=-1).all())
    # Only the drawn rows of the pool moved: exactly one negative batch.
    moved_rows = (snap.pool_after != snap.pool).any(dim=-1)
    assert int(moved_rows.sum()) == cfg.sampler.negative.batch_size
    # Particles of data outside the batch were not touched.
    untouched = torch.ones(model.posterior.store.values.shape[0], dtype=torch.bool)
    untouched[model.posterior.store._local(snap.index)] = False
    assert torch.equal(snap.store_after[untouched], model.posterior.store.values[untouched])


def _read_csv_metrics(path: Path) -> dict[str, list[float]]:
    import csv

    columns: dict[str, list[float]] = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                if v not in ("", None):
                    columns.setdefault(k, []).append(float(v))
    return columns


def _close(a: list[float], b: list[float], rel: float = 1e-4) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= rel * max(1.0, abs(y)) for x, y in zip(a, b))


def assert_every_metric_is_finite_and_sane(columns: dict[str, list[float]], lr: float) -> None:
    """Every logged value is finite, and every metric has a range it must lie in (a new metric needs one here).

    Ranges are either identities between logged values (the gap is e_pos - e_neg; the IW bound and the ELBO come
    from the same log-weights, so IW >= ELBO by Jensen) or bounds the maths sets: an ELBO and (up to Monte-Carlo
    error) an IW bound lie below the exact log-likelihood of the same data; a model cannot beat the true density's
    held-out NLL by more than the sampling error of 256 held-out data; masses and acceptance rates are in [0, 1];
    distances are positive; the learning rate never exceeds the configured one; the quadrature box holds the mass.
    Energies, norms and distances of a 20-step run in standardised units stay far below 100.
    """
    for key, values in columns.items():
        assert all(math.isfinite(v) for v in values), key
    checked = {"epoch", "step"}

    def check(key: str, ok: bool) -> None:
        assert ok, (key, columns[key])
        checked.add(key)

    c = columns
    check("train/lr", all(0.0 <= v <= lr * (1 + 1e-6) for v in c["train/lr"]))
    check("train/skipped_steps", all(v == 0 for v in c["train/skipped_steps"]))
    check("train/neg_accept", all(0.0 < v <= 1.0 for v in c["train/neg_accept"]))
    for key in ("train/e_pos", "train/e_neg", "train/loss"):
        check(key, all(abs(v) < 100 for v in c[key]))
    for key in ("train/grad_norm", "train/energy_scale", "train/z_norm", "train/neg_norm"):
        check(key, all(0.0 < v < 100 for v in c[key]))
    check("train/gap", _close(c["train/gap"], [p - n for p, n in zip(c["train/e_pos"], c["train/e_neg"])]))
    for stage in ("val", "test"):
        m = {k.split("/", 1)[1]: v for k, v in c.items() if k.startswith(stage + "/")}
        for key in ("w2", "w2_floor", "w2_pool"):
            check(f"{stage}/{key}", all(0.0 < v < 100 for v in m[key]))
        check(f"{stage}/w2_ratio", _close(m["w2_ratio"], [a / b for a, b in zip(m["w2"], m["w2_floor"])]))
        # The floor (mean and spread over pairs of data samples) depends on the data alone: one value per split.
        check(f"{stage}/w2_floor_sd", all(0.0 < sd < f for sd, f in zip(m["w2_floor_sd"], m["w2_floor"])))
        assert len(set(m["w2_floor"])) == 1 and len(set(m["w2_floor_sd"])) == 1, stage
        check(f"{stage}/nll_gap", _close(m["nll_gap"], [a - b for a, b in zip(m["nll"], m["nll_true"])]))
        check(f"{stage}/nll", all(gap > -0.5 for gap in m["nll_gap"]))
        check(f"{stage}/nll_true", all(0.0 < v < 100 for v in m["nll_true"]))
        check(f"{stage}/iw_bound", all(iw >= e - 1e-4 for iw, e in zip(m["iw_bound"], m["elbo"])))
        check(f"{stage}/elbo", all(e < ll + 0.1 and iw < ll + 0.1
                                   for e, iw, ll in zip(m["elbo"], m["iw_bound"], m["train_log_lik"])))
        check(f"{stage}/train_log_lik", all(-100 < v < 0 for v in m["train_log_lik"]))
        check(f"{stage}/quadrature_edge_mass", all(0.0 <= v < 1e-2 for v in m["quadrature_edge_mass"]))
        for key in ("obs/right_well_mass", "obs/right_well_mass_data"):
            check(f"{stage}/{key}", all(0.0 <= v <= 1.0 for v in m[key]))
    assert set(columns) == checked, sorted(set(columns) - checked)


def test_fast_run_end_to_end_with_wandb_offline(make_cfg, tmp_path):
    cfg = make_cfg()
    metrics = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    columns = _read_csv_metrics(run_dir / "metrics.csv")
    for key in ("train/loss", "train/e_pos", "train/e_neg", "train/gap", "train/grad_norm", "val/w2",
                "val/w2_floor", "val/w2_pool", "val/nll", "val/nll_true", "val/elbo", "test/w2",
                "val/obs/right_well_mass", "val/obs/right_well_mass_data"):
        assert key in columns, key
    assert len(columns["train/loss"]) >= 2
    assert_every_metric_is_finite_and_sane(columns, lr=cfg.model.lr)
    assert metrics["val/w2"] == pytest.approx(columns["val/w2"][-1])
    galleries = sorted(p.name for p in (run_dir / "galleries").glob("*.png"))
    assert {n.split("_step")[0] for n in galleries} == {"samples", "landscape", "posterior"}
    # The offline W&B run exists and holds the metrics that were logged.
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    record = read_offline_run(runs[0])
    logged_w2 = [row["val/w2"] for row in record.history if "val/w2" in row]
    assert logged_w2 == pytest.approx(columns["val/w2"], rel=1e-6)
    assert max(row["trainer/global_step"] for row in record.history) == cfg.trainer.max_steps
    assert {"gallery/samples", "gallery/landscape", "gallery/posterior"} <= set(record.images)


def test_train_py_command_line_runs_and_rejects_a_wrong_key(tmp_path):
    run = tmp_path / "cli"
    ok = subprocess.run(
        [sys.executable, "train.py", "debug=fast", "logger=csv", "trainer.accelerator=cpu",
         f"hydra.run.dir={run}", "trainer.max_steps=4", "trainer.val_check_interval=4"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    bad = subprocess.run(
        [sys.executable, "train.py", "model.not_a_key=1", f"hydra.run.dir={tmp_path / 'bad'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode != 0
    assert "not_a_key" in bad.stderr
