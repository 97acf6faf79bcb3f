"""Every run with dx >= 4 measures conditional generation: val/recon_* and test/recon_* in the run's own metrics,
in W&B and in the end-of-run block, beside the k-NN reference on the same rows and mask."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from callbacks.reconstruction import ReconstructionMetrics
from lvebm_lightning.config.validation import ConfigError
from lvebm_lightning.data.datamodule import LVEBMDataModule
from lvebm_lightning.metrics.reconstruction import knn_predict
from lvebm_lightning.training import tracking
from lvebm_lightning.training.run import train
from tests.conftest import compose_config
from tests.helpers.wandb_records import read_offline_run

PENDULUM = ["data=pendulum", "model/energy=decoder", "model.dz=2", "callbacks.reconstruction.n_rows=48"]
KEYS = ("recon_rmse", "recon_coverage", "recon_rmse_knn")


def knn_rmse(split: str, n_rows: int, hidden: list[int], n_train: int = 512, k: int = 10) -> float:
    """The k-NN reference computed here from the data module alone: the first n_rows of the split, data units."""
    data = LVEBMDataModule(name="pendulum", n_train=n_train, n_val=256, n_test=256, batch_size=64, seed=0).prepare()
    train_x, rows = data.raw["train"].double(), data.raw[split][:n_rows].double()
    observed = [j for j in range(train_x.shape[1]) if j not in hidden]
    mean = knn_predict(train_x[:, observed], train_x[:, hidden], rows[:, observed], k)
    return float(((mean - rows[:, hidden]) ** 2).mean().sqrt())


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    """A 20-step decoder run on the 16-angle pendulum (validations at steps 10 and 20, the test at 20), W&B
    offline."""
    run = tmp_path_factory.mktemp("recon") / "run"
    return run, train(compose_config(run, PENDULUM))


def test_a_run_logs_reconstruction_scores_to_its_metrics_wandb_and_summary(pendulum_run, caplog):
    run, metrics = pendulum_run
    for stage in ("val", "test"):
        assert set(f"{stage}/{k}" for k in KEYS) <= set(metrics)
        assert 0.0 <= metrics[f"{stage}/recon_coverage"] <= 1.0 and metrics[f"{stage}/recon_rmse"] > 0
    # The k-NN reference is the k-NN regression on the training split, the same 48 rows, the last 8 of 16 angles.
    hidden = list(range(8, 16))
    assert metrics["val/recon_rmse_knn"] == pytest.approx(knn_rmse("val", 48, hidden), rel=1e-5)
    assert metrics["test/recon_rmse_knn"] == pytest.approx(knn_rmse("test", 48, hidden), rel=1e-5)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final/recon_rmse"] == pytest.approx(metrics["test/recon_rmse"])
    assert summary["final/recon_rmse_knn"] == pytest.approx(metrics["test/recon_rmse_knn"])
    (offline,) = sorted((run / "wandb").glob("offline-run-*"))
    record = read_offline_run(offline)
    logged = [row["val/recon_rmse"] for row in record.history if "val/recon_rmse" in row]
    assert len(logged) == 2 and logged[-1] == pytest.approx(metrics["val/recon_rmse"], rel=1e-6)
    assert record.summary["final/recon_rmse"] == pytest.approx(metrics["test/recon_rmse"])
    assert sorted(p.name for p in (run / "galleries").glob("reconstruction_*.png")) == [
        "reconstruction_step0000010.png", "reconstruction_step0000020.png"
    ]


def test_the_end_of_run_block_shows_the_reconstruction_beside_the_knn():
    summary = {"run_dir": "/tmp/run", "step": 20, "final/split": "test", "final/w2": 1.0,
               "final/recon_rmse": 0.5, "final/recon_rmse_knn": 0.12, "final/recon_coverage": 0.93}
    text = tracking.report(summary, SimpleNamespace(loggers=[]))  # type: ignore[arg-type]
    assert "  recon       rmse 0.5 (k-NN 0.12), 90% coverage 0.93" in text.splitlines()


def test_the_mask_defaults_to_the_last_half_and_needs_dx_4_unless_configured():
    callback = ReconstructionMetrics()
    assert callback.mask(3) is None
    assert callback.mask(5).tolist() == [False, False, False, True, True]  # the last dx // 2
    assert ReconstructionMetrics(hidden=[0, 2]).mask(3).tolist() == [True, False, True]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["callbacks.reconstruction.hidden=[3,20]"], r"hidden=\[3, 20\] names coordinate 20, but the data have dx=16"),
        (["callbacks.reconstruction.hidden=[0,1]", "data=double_well"], "hides all 2 coordinates"),
        (["callbacks.reconstruction.hidden=[1,1]"], "hidden names a coordinate twice"),
        (["callbacks.reconstruction.n_samples=1"], "n_samples must be a whole number >= 2, got 1"),
        (["callbacks.reconstruction.n_samples=600"], "n_samples=600 chains start at as many training data, but"),
    ],
)
def test_bad_reconstruction_settings_fail_in_one_line_before_anything_is_written(overrides, message, tmp_path):
    cfg = compose_config(tmp_path / "run", [*PENDULUM, *overrides])
    with pytest.raises(ConfigError, match=message) as info:
        train(cfg)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_under_ddp_each_rank_scores_its_share_and_both_log_the_sums_of_all(tmp_path):
    """2 ranks on gloo: rows i mod 2 on rank i, the sums added over ranks, so both ranks log the same values and
    the k-NN reference equals the one computed here on all 48 rows at once; the store is gathered from both."""
    from tests.test_ddp import N_DATA, run_train

    _, (r0, r1) = run_train(
        tmp_path, *PENDULUM, "trainer.devices=2", "trainer.max_steps=1", "trainer.val_check_interval=1", "logger=csv",
        "~callbacks.gallery",
    )
    m0, m1 = r0["validation"][0]["metrics"], r1["validation"][0]["metrics"]
    assert {f"val/{k}" for k in KEYS} <= set(m0)
    assert all(m0[f"val/{k}"] == m1[f"val/{k}"] for k in KEYS)
    assert m0["val/recon_rmse_knn"] == pytest.approx(knn_rmse("val", 48, list(range(8, 16)), N_DATA), rel=1e-5)
