"""Real DDP: ``python train.py trainer=ddp_cpu`` with 2 CPU processes on gloo (docs/design.md section 3).

One chain of runs on a tiny double well (N = 131 data, so the two shards are uneven; B = 16 per rank, an epoch of
4 steps; a pool of M = 65 pairs), each run recording per-rank state with ``tests/ddp_probe.py``:

- A: 2 ranks, 6 steps, checkpoints every 2 steps, one validation at the end, W&B offline;
- C: 1 rank resumed from A's step-2 checkpoint (2 -> 1), to step 4;
- E: 2 ranks resumed from C's step-4 checkpoint (1 -> 2), to step 5.

Separate 2-rank runs check the AIS path of the metrics (dx + dz > 3, on the 4-D Lorenz system), a skipped update
that only one rank saw (D), and a SIGTERM that only one rank received (S, stopped at step 3, mid-epoch; R resumes it
on the same 2 ranks to step 6 and must repeat A exactly, step by step).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from lvebm_lightning.data.datamodule import LVEBMDataModule
from lvebm_lightning.seeding import STREAM_LATENT, STREAM_POOL, make_generator
from tests.helpers.wandb_records import read_offline_run

ROOT = Path(__file__).resolve().parents[1]
N_DATA, BATCH, POOL, N_VAL = 131, 16, 65, 256
TINY = [
    "debug=fast", "test=false", "trainer=ddp_cpu", f"data.n_train={N_DATA}", f"data.n_val={N_VAL}",
    f"data.batch_size={BATCH}", f"sampler.negative.pool_size={POOL}",
    "callbacks.model_checkpoint.every_n_train_steps=2", "callbacks.model_checkpoint.save_top_k=-1",
]
NO_VALIDATION = ["logger=csv", "+trainer.limit_val_batches=0", "~callbacks.best_checkpoint"]


def run_train(
    out: Path, *overrides: str, threads_from_lightning: bool = False, returncode: int = 0
) -> tuple[Path, list[dict[str, Any]]]:
    """Run ``train.py`` with the probe; return the run directory and every rank's probe record (rank order; none
    when the run was stopped by SIGTERM, which ends fit before the probe writes)."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    if threads_from_lightning:
        del env["OMP_NUM_THREADS"]  # let Lightning choose threads per process
    run_dir, probe_dir = out / "run", out / "probe"
    proc = subprocess.run(
        [sys.executable, "train.py", *TINY, *overrides, f"hydra.run.dir={run_dir}",
         "+callbacks.probe._target_=tests.ddp_probe.Probe", f"+callbacks.probe.out_dir={probe_dir}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == returncode, proc.stderr[-4000:]
    probe_dir.mkdir(parents=True, exist_ok=True)
    (probe_dir / "console.txt").write_text(proc.stdout + proc.stderr)
    records = [torch.load(p, weights_only=False) for p in sorted(probe_dir.glob("rank*.pt"))]
    assert [r["rank"] for r in records] == list(range(len(records)))
    return run_dir, records


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Any]:
    """Runs A, B, C and E (the module docstring); each test reads the part it checks."""
    base = tmp_path_factory.mktemp("ddp")
    a_dir, a = run_train(base / "A", "trainer.devices=2", "trainer.max_steps=6", "trainer.val_check_interval=6",
                         threads_from_lightning=True)
    a_ckpt2 = a_dir / "checkpoints" / "step_000002.ckpt"
    c_dir, c = run_train(base / "C", "trainer.devices=1", "trainer.max_steps=4", *NO_VALIDATION, f"ckpt_path={a_ckpt2}")
    c_ckpt4 = c_dir / "checkpoints" / "step_000004.ckpt"
    e_dir, e = run_train(base / "E", "trainer.devices=2", "trainer.max_steps=5", *NO_VALIDATION, f"ckpt_path={c_ckpt4}")
    return {"base": base, "A": (a_dir, a), "C": (c_dir, c), "E": (e_dir, e)}


def steps_by_number(record: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {s["global_step"]: s for s in record["steps"]}


@pytest.mark.slow
def test_one_run_directory_one_wandb_run_and_threads_per_process(runs):
    a_dir, a = runs["A"]
    assert sorted(p.name for p in (runs["base"] / "A").iterdir()) == ["probe", "run"]
    assert (a_dir / ".hydra" / "config.yaml").is_file() and (a_dir / "metrics.csv").is_file()
    assert (a_dir / "train_ddp_process_1.log").is_file()  # rank 1 ran in the same Hydra run directory
    assert sorted(p.name for p in (a_dir / "checkpoints").glob("*.ckpt")) == [
        "best.ckpt", "last.ckpt", "step_000002.ckpt", "step_000004.ckpt", "step_000006.ckpt"
    ]
    wandb_runs = list((a_dir / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1
    history = read_offline_run(wandb_runs[0]).history
    logged = [row["val/w2"] for row in history if "val/w2" in row]
    assert logged == pytest.approx([a[0]["validation"][0]["metrics"]["val/w2"]], rel=1e-6)
    # Lightning gives each of the 2 CPU processes its share of the cores (no oversubscription).
    cpus = len(os.sched_getaffinity(0))
    assert [r["threads"] for r in a] == [max(1, cpus // 2)] * 2


@pytest.mark.slow
def test_gradients_are_averaged_and_parameters_stay_identical(runs):
    _, (r0, r1) = runs["A"]
    assert torch.equal(r0["start"]["params"], r1["start"]["params"])
    for s0, s1 in zip(r0["steps"], r1["steps"], strict=True):
        assert not torch.equal(s0["index"], s1["index"])  # different data on the two ranks ...
        assert torch.equal(s0["grad"], s1["grad"])  # ... and one averaged gradient
        assert torch.equal(s0["params"], s1["params"])
    assert not torch.equal(r0["start"]["params"], r0["end"]["params"])


@pytest.mark.slow
def test_the_averaged_gradient_is_the_mean_of_the_local_gradients(runs):
    """Each rank's own gradient (hooked before DDP's reducer) against the gradient both ranks step with (right
    after backward, before clipping): the average of the two local ones, to float32 rounding of the all-reduce."""
    _, (r0, r1) = runs["A"]
    for s0, s1 in zip(r0["steps"], r1["steps"], strict=True):
        assert s0["local_grad"] is not None and s1["local_grad"] is not None
        assert not torch.allclose(s0["local_grad"], s1["local_grad"])  # different data, different local gradients
        torch.testing.assert_close(s0["averaged_grad"], (s0["local_grad"] + s1["local_grad"]) / 2, rtol=1e-5,
                                   atol=1e-7)
        assert torch.equal(s0["averaged_grad"], s1["averaged_grad"])


@pytest.mark.slow
def test_compiled_chains_under_ddp_follow_the_eager_run(runs, tmp_path):
    """Run A again with compiled chains (the default outside debug=fast) on the same 2 gloo ranks: both ranks compile
    their chains, DDP still averages one gradient that both step with, and the run ends where the eager run A
    ends, to float tolerance (the same noise reaches both; the compiled graphs round differently)."""
    c_dir, (c0, c1) = run_train(tmp_path, "trainer.devices=2", "trainer.max_steps=6", *NO_VALIDATION,
                                "sampler.compile=true", threads_from_lightning=True)
    a_dir, _ = runs["A"]
    for s0, s1 in zip(c0["steps"], c1["steps"], strict=True):
        assert torch.equal(s0["grad"], s1["grad"]) and torch.equal(s0["params"], s1["params"])
    eager, compiled = load(a_dir / "checkpoints" / "last.ckpt"), load(c_dir / "checkpoints" / "last.ckpt")
    eager_pool = eager["callbacks"]["NegativePool"]["pool"]
    compiled_pool = compiled["callbacks"]["NegativePool"]["pool"]
    assert not torch.equal(compiled_pool, eager_pool)  # the compiled path ran (a fallback to eager is bit-identical)
    torch.testing.assert_close(compiled_pool, eager_pool, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(compiled["lvebm"]["particles"], eager["lvebm"]["particles"], rtol=1e-3, atol=1e-4)
    for name, value in eager["state_dict"].items():
        torch.testing.assert_close(compiled["state_dict"][name], value, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.slow
def test_an_update_skipped_on_one_rank_is_skipped_on_both(tmp_path):
    """D: the latent particles of batch 2 turn NaN on rank 1 only; rank 0's values are all finite. The ranks agree
    (one all-reduce of the finiteness flags): both drop the update, count it, and keep identical parameters."""
    _, (r0, r1) = run_train(
        tmp_path, "trainer.devices=2", "trainer.max_steps=4", *NO_VALIDATION,
        "+callbacks.poison._target_=tests.helpers.faults.PoisonLatents", "+callbacks.poison.batch=2",
        "+callbacks.poison.rank=1",
    )
    assert len(r0["steps"]) == len(r1["steps"]) == 5  # 4 updates and the skipped one
    for r in (r0, r1):
        skipped = r["steps"][2]
        assert skipped["global_step"] == r["steps"][1]["global_step"] == 2  # no optimizer step for batch 2
        assert torch.equal(skipped["params"], r["steps"][1]["params"])
        assert [s["skipped_steps"] for s in r["steps"]] == [0, 0, 1, 1, 1]
        assert bool(torch.isfinite(r["end"]["store"]).all())  # rank 1 re-initialised its NaN particles
    for s0, s1 in zip(r0["steps"], r1["steps"], strict=True):
        assert torch.equal(s0["params"], s1["params"])


@pytest.fixture(scope="module")
def sigterm_resumed(runs) -> tuple[Path, list[dict[str, Any]]]:
    """S: A's settings, SIGTERM to rank 1 alone after step 3 (exit 143, last.ckpt saved by both ranks); R: resumed
    from it on 2 ranks to step 6. Returns R's run directory and probe records."""
    base = runs["base"]
    s_dir, _ = run_train(
        base / "S", "trainer.devices=2", "trainer.max_steps=6", "trainer.val_check_interval=6", "logger=csv",
        "+callbacks.stop._target_=tests.helpers.faults.StopAt", "+callbacks.stop.step=3",
        "+callbacks.stop.sigterm=true", "+callbacks.stop.rank=1", returncode=143,
    )
    last = s_dir / "checkpoints" / "last.ckpt"
    ckpt = load(last)
    assert ckpt["global_step"] == 3 and len(ckpt["lvebm"]["generator_states"]) == 2
    assert bool(torch.isfinite(ckpt["lvebm"]["particles"]).all())  # every rank's particles were gathered
    console = (base / "S" / "probe" / "console.txt").read_text()
    assert f"lvebm: stopped: stopped by SIGTERM at step 3; saved {last}, resume with" in console, console[-3000:]
    return run_train(base / "R", "trainer.devices=2", "trainer.max_steps=6", "trainer.val_check_interval=6",
                     "logger=csv", f"ckpt_path={last}")


@pytest.mark.slow
def test_a_sigterm_resume_on_two_ranks_ends_exactly_as_the_uninterrupted_run(runs, sigterm_resumed):
    from tests.helpers.checkpoints import assert_identical, training_state

    a_dir, _ = runs["A"]
    resumed = training_state(sigterm_resumed[0] / "checkpoints" / "step_000006.ckpt")
    assert_identical(resumed, training_state(a_dir / "checkpoints" / "step_000006.ckpt"), "2-rank SIGTERM resume")


@pytest.mark.slow
def test_ranks_draw_different_pool_rows_and_different_noise(runs):
    _, (r0, r1) = runs["A"]
    for r in (r0, r1):
        owned = set(r["start"]["pool_owned"].tolist())
        assert len(owned) == len(r["start"]["pool"]) and owned == set(range(r["rank"], POOL, 2))
        # Both systems start from the rank's own streams, seeded from (seed, rank, stream): seed=0 in the config.
        pool_stream = make_generator("cpu", 0, r["rank"], STREAM_POOL)
        assert torch.equal(r["start"]["pool"], torch.randn(len(owned), 3, generator=pool_stream))
        latent_stream = make_generator("cpu", 0, r["rank"], STREAM_LATENT)
        assert torch.equal(r["start"]["store"], torch.randn(r["start"]["store"].shape, generator=latent_stream))
    for s0, s1 in zip(r0["steps"], r1["steps"], strict=True):
        # Each rank moved one negative batch of its own rows; no row was moved by both ranks.
        assert len(s0["moved_pool"]) == len(s1["moved_pool"]) == BATCH
        assert all(int(i) % 2 == 0 for i in s0["moved_pool"]) and all(int(i) % 2 == 1 for i in s1["moved_pool"])
        for stream in ("latent_noise", "pool_noise"):
            assert not torch.allclose(s0[stream], s1[stream])
        assert not torch.allclose(s0["latent_noise"], s0["pool_noise"])


@pytest.mark.slow
def test_every_datum_is_moved_by_its_owner_only(runs):
    _, records = runs["A"]
    epoch_moved: dict[int, set[int]] = {}
    for r in records:
        rank = r["rank"]
        steps = [s for s in r["steps"] if s["epoch"] == 0]
        assert len(steps) == (N_DATA // 2) // BATCH == 4  # the same number of batches on every rank
        moved: list[int] = []
        for s in steps:
            assert sorted(s["moved"].tolist()) == sorted(s["index"].tolist())  # the batch's particles, and no other
            assert all(i % 2 == rank for i in s["index"].tolist())  # the rank's own shard
            moved += s["index"].tolist()
        assert len(moved) == len(set(moved)) == 4 * BATCH  # each datum at most once in the epoch
        epoch_moved[rank] = set(moved)
    assert not epoch_moved[0] & epoch_moved[1]
    # drop_last leaves at most one datum of each shard (66 and 65 data, 64 used) unmoved in the epoch.
    assert len(epoch_moved[0] | epoch_moved[1]) == 128


@pytest.mark.slow
def test_checkpoint_holds_every_datum_the_whole_pool_and_every_generator(runs):
    a_dir, (r0, r1) = runs["A"]
    ckpt = load(a_dir / "checkpoints" / "step_000006.ckpt")
    particles = ckpt["lvebm"]["particles"]
    assert particles.shape == (N_DATA, 1, 1) and bool(torch.isfinite(particles).all())
    pool_state = ckpt["callbacks"]["NegativePool"]
    assert pool_state["pool"].shape == (POOL, 3) and bool(torch.isfinite(pool_state["pool"]).all())
    for r in (r0, r1):
        end = r["end"]
        assert end["global_step"] == 6
        assert torch.equal(particles[end["owned"]], end["store"])
        assert torch.equal(pool_state["pool"][end["pool_owned"]], end["pool"])
        assert torch.equal(ckpt["lvebm"]["generator_states"][r["rank"]], end["latent_generator"])
        assert torch.equal(pool_state["generator_states"][r["rank"]], end["pool_generator"])
    assert not torch.equal(r0["end"]["latent_generator"], r1["end"]["latent_generator"])


@pytest.mark.slow
def test_metrics_use_samples_gathered_from_both_ranks(runs):
    _, (r0, r1) = runs["A"]
    v0, v1 = r0["validation"][0], r1["validation"][0]
    assert {"val/w2", "val/w2_floor", "val/w2_pool", "val/nll", "val/elbo"} <= set(v0["metrics"])
    assert v0["metrics"] == v1["metrics"]
    datamodule = LVEBMDataModule(name="double_well", n_train=N_DATA, n_val=N_VAL, n_test=256, seed=0).prepare()
    val = datamodule.raw["val"]
    assert v0["data"].shape == val.shape  # both shards of the held-out data ...
    assert torch.allclose(v0["data"][v0["data"][:, 0].argsort()], val[val[:, 0].argsort()], atol=1e-5)
    assert torch.equal(v0["data"], v1["data"])
    assert v0["model"].shape[0] == 256 and torch.equal(v0["model"], v1["model"])  # ... and of the model samples
    pool = torch.empty(POOL, 3)  # the whole pool, each rank's rows at their global row ids
    for r in (r0, r1):
        pool[r["end"]["pool_owned"]] = r["end"]["pool"]
    assert torch.allclose(v0["pool"], pool[:, :2] * datamodule.std + datamodule.mean, atol=1e-5)


@pytest.mark.slow
def test_resume_on_the_same_ranks_continues_exactly(runs, sigterm_resumed):
    _, a = runs["A"]
    _, b = sigterm_resumed
    for ra, rb in zip(a, b, strict=True):
        assert rb["start"]["global_step"] == 3
        steps_a = steps_by_number(ra)
        assert [s["global_step"] for s in rb["steps"]] == [4, 5, 6]
        for s in rb["steps"]:
            t = steps_a[s["global_step"]]
            for key in ("index", "particles", "latent_noise", "pool_noise", "params"):
                assert torch.equal(s[key], t[key]), (s["global_step"], key)
        for key in ("store", "pool", "latent_generator", "pool_generator", "params"):
            assert torch.equal(rb["end"][key], ra["end"][key]), key
        assert rb["validation"][0]["metrics"] == ra["validation"][0]["metrics"]


@pytest.mark.slow
def test_resume_on_fewer_ranks_keeps_every_datum(runs):
    a_dir, _ = runs["A"]
    c_dir, (c,) = runs["C"]
    saved = load(a_dir / "checkpoints" / "step_000002.ckpt")
    start = c["start"]
    assert c["world"] == 1 and start["global_step"] == 2
    assert torch.equal(start["owned"], torch.arange(N_DATA))
    assert torch.equal(start["store"], saved["lvebm"]["particles"])
    assert torch.equal(start["pool"], saved["callbacks"]["NegativePool"]["pool"])
    log = (c_dir / "train.log").read_text()
    assert "saved under 2 rank(s), resumed under 1: re-sharded" in log
    assert "saved under 2 rank(s), resumed under 1: re-split the pool" in log


@pytest.mark.slow
def test_resume_on_more_ranks_keeps_every_datum(runs):
    c_dir, _ = runs["C"]
    e_dir, e = runs["E"]
    saved = load(c_dir / "checkpoints" / "step_000004.ckpt")
    assert len(saved["lvebm"]["generator_states"]) == 1  # written by one rank
    owned = torch.cat([r["start"]["owned"] for r in e])
    assert sorted(owned.tolist()) == list(range(N_DATA))
    for r in e:
        start = r["start"]
        assert start["global_step"] == 4
        assert torch.equal(start["store"], saved["lvebm"]["particles"][start["owned"]])
        assert torch.equal(start["pool"], saved["callbacks"]["NegativePool"]["pool"][start["pool_owned"]])
        assert [s["global_step"] for s in r["steps"]] == [5]
    assert not torch.equal(e[0]["start"]["latent_generator"], e[1]["start"]["latent_generator"])
    assert not torch.equal(e[0]["start"]["pool_generator"], e[1]["start"]["pool_generator"])
    log = (e_dir / "train.log").read_text()
    assert "saved under 1 rank(s), resumed under 2: re-sharded" in log
    assert "saved under 1 rank(s), resumed under 2: re-split the pool" in log


@pytest.mark.slow
def test_ais_log_partition_is_pooled_over_ranks(tmp_path):
    """dx + dz = 4: log Z by AIS, its chains split over the ranks; every rank must log the same ELBO and log Z."""
    _, (r0, r1) = run_train(
        tmp_path, "data=lorenz63", "trainer.devices=2", "trainer.max_steps=1", "trainer.val_check_interval=1",
        "logger=csv", "~callbacks.gallery", "callbacks.metrics.ais_chains=16", "callbacks.metrics.ais_temperatures=8",
    )
    m0, m1 = r0["validation"][0]["metrics"], r1["validation"][0]["metrics"]
    assert {"val/log_z_ais", "val/elbo", "val/iw_bound"} <= set(m0)
    assert m0 == m1


# -- fast checks of the DDP boundaries (no processes started) ----------------------------------------------------
@pytest.mark.parametrize(
    ("devices", "nodes", "world"),
    [(2, 1, 2), ("4", 1, 4), ([0, 1], 1, 2), ("0,1,2", 1, 3), (2, 3, 6), ("auto", 1, None), (-1, 2, None)],
)
def test_expected_world_size_reads_devices_as_lightning_does(make_cfg, devices, nodes, world):
    from omegaconf import open_dict

    from lvebm_lightning.config.validation import expected_world_size

    cfg = make_cfg()
    with open_dict(cfg):
        cfg.trainer.devices, cfg.trainer.num_nodes = devices, nodes
    assert expected_world_size(cfg) == world


def test_ddp_settings_that_cannot_work_are_rejected_before_training(make_cfg):
    from lvebm_lightning.config.validation import ConfigError, validate

    # 4 ranks x 64 pairs need a pool of at least 256.
    with pytest.raises(ConfigError, match=r"pool_size=200 .* x 4 rank"):
        validate(make_cfg("trainer.devices=[0,1,2,3]", "sampler.negative.pool_size=200"))
    with pytest.raises(ConfigError, match="trainer.devices='two'"):
        validate(make_cfg("trainer.devices=two"))
    with pytest.raises(ConfigError, match="use_distributed_sampler must be false"):
        validate(make_cfg("trainer=ddp_cpu", "trainer.use_distributed_sampler=true"))


def test_too_few_data_for_the_ranks_is_rejected_before_training(make_cfg):
    from lvebm_lightning.config.compose import ConfigError
    from lvebm_lightning.training.run import train

    cfg = make_cfg("trainer=ddp_cpu", "trainer.devices=4", "data.n_train=3")
    with pytest.raises(ConfigError, match="3 training data cannot be sharded over 4 ranks"):
        train(cfg)
    assert not Path(cfg.paths.output_dir).exists()


@pytest.mark.parametrize(
    ("saved_world", "done", "world", "epoch", "skip"),
    [(2, 2, 2, 0, 2), (2, 2, 1, 0, 4), (1, 4, 2, 0, 2), (1, 8, 2, 1, 0)],
)
def test_sampler_resumes_after_the_same_share_of_the_epoch_on_another_number_of_ranks(
    saved_world, done, world, epoch, skip
):
    """128 data, 16 per rank and step: ``done`` steps under ``saved_world`` ranks used done x saved_world x 16 data."""
    from lvebm_lightning.data.shards import ShardedBatchSampler

    sampler = ShardedBatchSampler(128, 16, rank=0, world_size=world, progress=lambda: done)
    sampler.load_state_dict({"consumed": done, "rank": 0, "world_size": saved_world})
    assert sampler.position() == (epoch, skip)
    assert len(list(iter(sampler))) == len(sampler) - skip
