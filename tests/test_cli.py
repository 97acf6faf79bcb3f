"""lvebm-sample / -infer / -eval / -reconstruct and their Python functions, on checkpoints of a tiny training run."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import numpy as np
import pytest
import torch

from lvebm_lightning.inference import InferenceError, draws, evaluate, infer, infer_checked, load, reconstruct, sample
from lvebm_lightning.inference.commands import eval_main, infer_main, reconstruct_main, sample_main
from lvebm_lightning.metrics.mixing import LEVEL
from lvebm_lightning.training.run import train
from tests.conftest import compose_config
from tests.helpers.commands import run_command

ROOT = Path(__file__).resolve().parents[1]
GAMMA = 4.0  # the Gaussian checkpoint's confinement: p(x, z) = N(0, I / GAMMA) in standardised units


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-step run of the real config (validation and test at step 10, CSV log, no W&B)."""
    run = tmp_path_factory.mktemp("cli") / "run"
    train(compose_config(run, ["trainer.max_steps=10", "trainer.val_check_interval=10", "logger=csv",
                               "~callbacks.gallery"]))
    return run


@pytest.fixture(scope="module")
def ckpt(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def gaussian_ckpt(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained checkpoint with its network's output layer zeroed and confinement GAMMA: E = GAMMA |(x, z)|^2 / 2,
    so p(x, z) = N(0, I / GAMMA) and p(z | x) = N(0, I / GAMMA) in standardised units, whatever the data."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    last = max(k for k in state["state_dict"] if k.startswith("energy.net.") and k.endswith(".weight"))
    for key in (last, last.replace(".weight", ".bias")):
        state["state_dict"][key] = torch.zeros_like(state["state_dict"][key])
    state["hyper_parameters"]["energy"] = {**state["hyper_parameters"]["energy"], "gamma": GAMMA}
    # Chains of T_eval = 400 steps of h = 0.01 (time 4, sixteen relaxation times 1 / GAMMA) reach equilibrium.
    state["hyper_parameters"]["long_chains"] = {**state["hyper_parameters"]["long_chains"], "n_steps": 400}
    path = tmp_path_factory.mktemp("gauss") / "gauss.ckpt"
    torch.save(state, path)
    return path


def stationary_var(step_size: float) -> float:
    """Variance of Euler-Maruyama Langevin on E = GAMMA z^2 / 2 at stationarity: 1 / (GAMMA (1 - GAMMA h / 2))."""
    return 1.0 / (GAMMA * (1.0 - GAMMA * step_size / 2.0))


def last_logged(run_dir: Path, key: str) -> float:
    with open(run_dir / "metrics.csv") as f:
        return [float(r[key]) for r in csv.DictReader(f) if r.get(key)][-1]


# -- the Python functions ----------------------------------------------------------------------------------------
def test_sample_draws_the_model_distribution_in_data_units(gaussian_ckpt):
    model = load(gaussian_ckpt)
    h, n = 0.01, 4000
    x, z = sample(model, n, pairs=True, n_steps=400, step_size=h, seed=1)
    assert x.shape == (n, model.dx) and z.shape == (n, model.dz)
    mean, std = model.module.data_mean.numpy(), model.module.data_std.numpy()
    var = stationary_var(h)
    # Standardised samples are N(0, var): 4 standard errors of the mean and of the variance estimate.
    x_std = (x - mean) / std
    for cloud in (x_std, z):
        assert np.abs(cloud.mean(0)).max() < 4 * math.sqrt(var / n)
        assert np.abs(cloud.var(0) / var - 1).max() < 4 * math.sqrt(2 / n)
    # Seeded streams are reproducible; the default stream is the run's evaluation stream at the checkpoint step.
    np.testing.assert_array_equal(sample(model, 50, n_steps=5, seed=1), sample(model, 50, n_steps=5, seed=1))
    assert not np.array_equal(sample(model, 50, n_steps=5, seed=1), sample(model, 50, n_steps=5, seed=2))


def test_sample_from_the_pool_returns_the_checkpoint_pool(ckpt):
    model = load(ckpt)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    pool = state["callbacks"]["NegativePool"]["pool"]
    x, z = sample(model, None, pairs=True, source="pool")
    np.testing.assert_allclose(x, model.module.to_data_units(pool[:, :2]).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(z, pool[:, 2:].numpy())
    with pytest.raises(InferenceError, match=f"holds {len(pool)} pairs, fewer than n={len(pool) + 1}"):
        sample(model, len(pool) + 1, source="pool")


def test_infer_gives_posterior_particles_of_each_datum(gaussian_ckpt):
    model = load(gaussian_ckpt)
    points = np.random.default_rng(0).normal(size=(50, model.dx)) * 3.0
    h, k = 0.01, 64
    z = infer(model, points, n_particles=k, n_steps=400, step_size=h, seed=0)
    assert z.shape == (50, k, model.dz)
    var, n = stationary_var(h), z.size
    assert abs(z.mean()) < 4 * math.sqrt(var / n)
    assert abs(z.var() / var - 1) < 4 * math.sqrt(2 / n)


def test_neighbour_start_begins_each_chain_at_the_persistent_particles_of_the_nearest_training_data(ckpt):
    """start=neighbours: chain k of datum b starts at the stored particles of its k-th nearest training datum
    (standardised units), so with no steps a training datum gets its own particles first, then its neighbours'."""
    model = load(ckpt)
    train = model.run_data().raw["train"]
    x = train[:6]
    k = 3
    z = infer(model, x, n_particles=k, n_steps=0, seed=0, start="neighbours")
    train_std = model.module.to_standard_units(train)
    nearest = torch.cdist(train_std[:6], train_std).topk(k, largest=False).indices  # brute force
    assert torch.equal(nearest[:, 0], torch.arange(6))  # a training datum is its own nearest
    assert np.array_equal(z, model.particles[nearest, 0].numpy())  # K' = 1 particle per training datum
    prior = infer(model, x, n_particles=k, n_steps=0, seed=0, start="prior")
    assert not np.array_equal(prior, z)
    # The chains then move from there: T steps change the particles.
    moved = infer(model, x, n_particles=k, n_steps=5, seed=0, start="neighbours")
    assert moved.shape == z.shape and not np.array_equal(moved, z)

def test_neighbour_starts_follow_their_data_across_chunks(ckpt, monkeypatch):
    """Data are inferred in chunks of CHUNK // K rows: each chunk's chains start at its own data's neighbours."""
    model = load(ckpt)
    x = model.run_data().raw["train"][:7]
    whole = infer(model, x, n_particles=3, n_steps=0, seed=0, start="neighbours")
    monkeypatch.setattr(draws, "CHUNK", 6)  # 2 data per chunk: chunks of 2, 2, 2, 1
    assert np.array_equal(infer(model, x, n_particles=3, n_steps=0, seed=0, start="neighbours"), whole)


def test_starts_and_checks_are_refused_or_fall_back_to_the_best_start_a_checkpoint_has(ckpt):
    model = load(ckpt)
    with pytest.raises(InferenceError, match="start must be one of neighbours, prior"):
        infer(model, "test", n_particles=2, n_steps=0, start="nearest")
    n_stored = model.particles.shape[0] * model.particles.shape[1]
    with pytest.raises(InferenceError, match=f"start at {n_stored + 1} of the {n_stored} particles in the store"):
        infer(model, "test", n_particles=n_stored + 1, n_steps=0, start="neighbours")
    with pytest.raises(InferenceError, match="check must be one of neighbours, prior, none, got 'both'"):
        infer_checked(model, "test", 2, n_steps=0, check="both")
    with pytest.raises(InferenceError, match="a set needs 2 to have a spread"):
        infer_checked(model, "test", 1, n_steps=0)
    model.particles = None  # what a short-run checkpoint holds: no store, no encoder, so z starts from N(0, I)
    np.testing.assert_array_equal(infer(model, "test", 2, n_steps=0, seed=0, start="neighbours"),
                                  infer(model, "test", 2, n_steps=0, seed=0, start="prior"))


def test_infer_checked_compares_two_start_sets_per_datum(ckpt, gaussian_ckpt):
    """The first set starts where ``infer`` starts; on the Gaussian checkpoint, whose posterior N(0, I / GAMMA)
    the chains reach in 200 steps from anywhere (eight relaxation times 1 / GAMMA), the store's set and the
    prior's agree: at most LEVEL + 5 binomial standard errors of the data are flagged."""
    model = load(ckpt)
    x = model.run_data().raw["val"][:20]
    still = infer_checked(model, x, 8, n_steps=0, seed=0, check="prior")
    assert still["between_set_t"].shape == still["t_threshold"].shape == still["disagree"].shape == (20,)
    np.testing.assert_array_equal(still["z"], infer(model, x, 8, n_steps=0, seed=0))
    assert np.array_equal(still["disagree"], still["between_set_t"] > still["t_threshold"])
    n = 100
    points = model.run_data().raw["val"][:n]
    mixed = infer_checked(gaussian_ckpt, points, 32, n_steps=200, step_size=0.01, seed=0, check="prior")
    assert mixed["disagree"].mean() <= LEVEL + 5 * math.sqrt(LEVEL * (1 - LEVEL) / n), mixed["disagree"].mean()


def test_evaluate_reproduces_the_metrics_logged_in_training(run_dir, ckpt):
    for split in ("val", "test"):
        metrics = evaluate(ckpt, split)
        assert metrics["step"] == 10 and metrics["w2_floor_reference"] == "training split"
        for key in ("w2", "w2_floor", "w2_floor_sd", "w2_ratio", "w2_pool", "nll"):
            assert metrics[key] == pytest.approx(last_logged(run_dir, f"{split}/{key}"), rel=1e-5), (split, key)
    json.dumps(metrics)  # plain numbers and strings only


def test_evaluate_nll_and_elbo_against_the_exact_likelihood(gaussian_ckpt):
    model = load(gaussian_ckpt)
    mean, std = model.module.data_mean.double(), model.module.data_std.double()
    x_std = torch.randn(400, model.dx, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_std = x_std / math.sqrt(GAMMA)
    x = (x_std * std + mean).numpy()
    metrics = evaluate(model, x, n_particles=16, quadrature_points=64)
    # Exact: x_std ~ N(0, I / GAMMA), and -log p(x) = -log N(x_std; 0, I / GAMMA) + sum_d log sigma_d.
    exact_nll = float(
        (0.5 * GAMMA * (x_std**2).sum(-1) - 0.5 * model.dx * math.log(GAMMA / (2 * math.pi))).mean()
        + std.log().sum()
    )
    assert metrics["nll"] == pytest.approx(exact_nll, abs=1e-3)
    assert metrics["quadrature_edge_mass"] < 1e-3
    # Lower bounds of the same log-likelihood, tight here since p(z | x) is Gaussian; the Monte-Carlo error of a
    # mean over 400 data of S = 64 draws each is far below 0.05 nats.
    assert metrics["elbo"] <= metrics["iw_bound"] + 0.05
    assert metrics["iw_bound"] <= -exact_nll + 0.05
    assert metrics["elbo"] >= -exact_nll - 0.5


def test_evaluate_without_the_training_config_floors_against_half_of_the_data(ckpt, tmp_path):
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    del state["config"]
    torch.save(state, tmp_path / "bare.ckpt")
    model = load(tmp_path / "bare.ckpt")
    x = sample(load(ckpt), 120, n_steps=5, seed=3)
    metrics = evaluate(model, x)
    assert metrics["w2_floor_reference"] == "halves" and metrics["n_w2"] == 60
    assert metrics["w2_floor"] > metrics["w2_floor_sd"] > 0
    with pytest.raises(InferenceError, match="holds no training config, so the run's data cannot be rebuilt"):
        evaluate(model, "test")


def test_bad_requests_are_refused_before_any_work(ckpt, tmp_path):
    model = load(ckpt)
    with pytest.raises(InferenceError, match="has 3 columns but the model was trained on dx=2"):
        infer(model, np.zeros((5, 3)))
    with pytest.raises(InferenceError, match="n_particles must be a positive number"):
        infer(model, np.zeros((5, 2)), n_particles=0)
    with pytest.raises(InferenceError, match="source must be chains or pool"):
        sample(model, 10, source="pools")


# -- the commands ------------------------------------------------------------------------------------------------
def test_commands_write_their_outputs(ckpt, tmp_path, capsys):
    code, out, _ = run_command(sample_main, [f"ckpt={ckpt}", "n=300", f"out={tmp_path / 's.npz'}", "pairs=true",
                                             "n_steps=20"], capsys)
    assert code == 0 and "wrote 300 samples" in out
    with np.load(tmp_path / "s.npz") as saved:
        assert saved["x"].shape == (300, 2) and saved["z"].shape == (300, 1)
    code, _, _ = run_command(sample_main, [f"ckpt={ckpt}", "n=40", f"out={tmp_path / 's.csv'}", "pairs=true",
                                           "n_steps=5"], capsys)
    assert code == 0
    assert (tmp_path / "s.csv").read_text().splitlines()[0] == "x1,x2,z1"
    assert np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1).shape == (40, 3)

    points = tmp_path / "points.npy"
    np.save(points, np.random.default_rng(0).normal(size=(7, 2)).astype(np.float32))
    code, _, _ = run_command(infer_main, [f"ckpt={ckpt}", f"data={points}", "n_particles=5", "n_steps=10",
                                          "step_size=0.02", f"out={tmp_path / 'post.npz'}"], capsys)
    assert code == 0
    with np.load(tmp_path / "post.npz") as saved:
        assert saved["z"].shape == (7, 5, 1)
        np.testing.assert_array_equal(saved["x"], np.load(points))
    code, _, _ = run_command(infer_main, [f"ckpt={ckpt}", f"data={points}", "n_particles=5", "n_steps=0",
                                          "start=neighbours", "check=none", f"out={tmp_path / 'nb.npy'}"], capsys)
    assert code == 0
    np.testing.assert_array_equal(
        np.load(tmp_path / "nb.npy"), infer(ckpt, np.load(points), 5, n_steps=0, start="neighbours")
    )

    code, out, _ = run_command(eval_main, [f"ckpt={ckpt}", "data=val", f"out={tmp_path / 'm.json'}"], capsys)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert code == 0 and {"w2", "w2_floor", "nll", "elbo", "iw_bound"} <= set(metrics)
    assert f"w2                     {metrics['w2']:.6g}" in out


@pytest.mark.parametrize(
    ("main", "args", "message"),
    [
        (sample_main, ["ckpt=/nowhere/last.ckpt", "out={tmp}/s.npy"],
         "Checkpoint not found: /nowhere/last.ckpt; pass ckpt="),
        (sample_main, ["ckpt={ckpt}", "n=ten"], "n must be a whole number, got 'ten'"),
        (sample_main, ["ckpt={ckpt}", "temperature=2"], "unknown argument 'temperature'; lvebm-sample takes ckpt, n"),
        (sample_main, ["ckpt={ckpt}", "--n=5"], "write n=5 (key=value, no dashes)"),
        (sample_main, ["ckpt={ckpt}", "out={tmp}/s.txt"], "samples are written as .npy or .npz or .csv"),
        (sample_main, ["ckpt={ckpt}", "n=-3", "out={tmp}/s.npy"], "n must be a positive number, got -3"),
        (sample_main, ["n=5"], "missing ckpt=<checkpoint>"),
        (infer_main, ["ckpt={ckpt}", "data={tmp}/three.npy", "out={tmp}/p.npz"],
         "three.npy has 3 columns but the model was trained on dx=2"),
        (infer_main, ["ckpt={ckpt}", "data={tmp}/missing.npy", "out={tmp}/p.npz"], "missing.npy is neither a split"),
        (infer_main, ["ckpt={ckpt}", "data=val", "start=nearest", "out={tmp}/p.npz"],
         "start must be neighbours or prior, got 'nearest'"),
        (infer_main, ["ckpt={ckpt}", "data=val", "check=both", "out={tmp}/p.npz"],
         "check must be neighbours, prior or none, got 'both'"),
        (infer_main, ["ckpt={ckpt}", "data=val", "out={tmp}/p.npy"], "holds z only, not the per-datum check"),
        (infer_main, ["ckpt={ckpt}", "data=val", "n_particles=1", "out={tmp}/p.npz"], "a set needs 2 to have a spread"),
        (reconstruct_main, ["ckpt={ckpt}", "data={tmp}/partial.npy", "start=store", "out={tmp}/r.npz"],
         "start must be neighbours or prior, got 'store'"),
        (reconstruct_main, ["ckpt={ckpt}", "data={tmp}/partial.npy", "check=both", "out={tmp}/r.npz"],
         "check must be neighbours, prior or none, got 'both'"),
        (reconstruct_main, ["ckpt={ckpt}", "data={tmp}/partial.npy", "n_samples=1", "out={tmp}/r.npz"],
         "a set needs 2 to have a spread"),
        (reconstruct_main, ["ckpt={ckpt}", "data={tmp}/partial.npy", "n_samples=600", "out={tmp}/r.npz"],
         "start at 600 of the 512 particles in the store"),
        (eval_main, ["ckpt={ckpt}", "data={tmp}/three.npy", "out={tmp}/e.json"], "has 3 columns"),
        (eval_main, ["ckpt={tmp}", "data=val", "out={tmp}/e.json"], "is a folder; pass the .ckpt file"),
        (reconstruct_main, ["ckpt={ckpt}", "data={tmp}/full.npy", "out={tmp}/r.npz"], "has no NaN entries"),
        (reconstruct_main, ["ckpt={ckpt}", "data={tmp}/empty_row.npy", "out={tmp}/r.npz"], "row 1 is all NaN"),
        (reconstruct_main, ["ckpt={ckpt}", "data={tmp}/three.npy", "out={tmp}/r.npz"], "but the model needs [B, 2]"),
        (reconstruct_main, ["ckpt={ckpt}", "data=val", "out={tmp}/r.npz"], "data=val is not a file"),
        (reconstruct_main, ["ckpt={ckpt}", "data={tmp}/notes.json", "out={tmp}/r.npz"], "unsupported extension"),
        (reconstruct_main, ["ckpt={ckpt}", "data={tmp}/partial.npy", "n_samples=0"],
         "n_samples must be a positive number, got 0"),
        (reconstruct_main, ["ckpt={ckpt}", "data={tmp}/partial.npy", "step_size=0"],
         "step_size must be a positive number, got 0"),
        (reconstruct_main, ["ckpt={ckpt}", "data={tmp}/partial.npy", "n_steps=-1"],
         "n_steps must be a whole number >= 0, got -1"),
        (reconstruct_main, ["ckpt={ckpt}", "data={tmp}/partial.npy", "n_samples=many"],
         "n_samples must be a whole number, got 'many'"),
        (reconstruct_main, ["ckpt={ckpt}", "data={tmp}/partial.npy", "out={tmp}/new/r.npy"],
         "reconstructions are written as .npz"),
        (reconstruct_main, ["ckpt={ckpt}", "data={tmp}/partial.npy", "sample=3"],
         "unknown argument 'sample'; lvebm-reconstruct takes ckpt, data,"),
        (reconstruct_main, ["ckpt={tmp}/notes.json", "data={tmp}/partial.npy"], "is not a readable checkpoint"),
        (reconstruct_main, ["data={tmp}/partial.npy"], "missing ckpt=<checkpoint>"),
        (reconstruct_main, ["ckpt={ckpt}", "data={tmp}/partial.npy", "out={tmp}/notes.json/r.npz"],
         "is not a folder this user can write into"),
        (infer_main, ["ckpt={ckpt}", "data=val", "start=neighbours", "n_particles=513", "out={tmp}/new/p.npz"],
         "start at 513 of the 512 particles in the store"),
    ],
)
def test_commands_refuse_bad_input_with_one_line(main, args, message, ckpt, tmp_path, capsys):
    np.save(tmp_path / "three.npy", np.zeros((10, 3), dtype=np.float32))
    np.save(tmp_path / "full.npy", np.zeros((4, 2)))
    np.save(tmp_path / "empty_row.npy", np.array([[0.0, np.nan], [np.nan, np.nan]]))
    np.save(tmp_path / "partial.npy", np.array([[0.5, np.nan], [np.nan, -1.0]]))
    (tmp_path / "notes.json").write_text("{}")
    before = sorted(tmp_path.rglob("*"))
    code, out, err = run_command(main, [a.format(ckpt=ckpt, tmp=tmp_path) for a in args], capsys)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and err.startswith("lvebm-")
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, no folder made


def test_console_scripts_run_as_installed(ckpt, tmp_path):
    """The [project.scripts] entries exist, and one runs in a fresh process as pip's wrapper would run it."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"lvebm-sample", "lvebm-infer", "lvebm-eval", "lvebm-reconstruct"}
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(import_module(module), function))
    module, function = scripts["lvebm-sample"].split(":")
    out = tmp_path / "samples.npy"
    done = subprocess.run(
        [sys.executable, "-c", f"import sys; from {module} import {function}; sys.exit({function}())",
         f"ckpt={ckpt}", "n=64", "n_steps=5", f"out={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert np.load(out).shape == (64, 2)
    bad = subprocess.run(
        [sys.executable, "-m", "lvebm_lightning.inference.commands", "infer", f"ckpt={tmp_path / 'none.ckpt'}",
         "data=val"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == f"lvebm-infer: error: Checkpoint not found: {tmp_path / 'none.ckpt'}; pass " \
        "ckpt=<run dir>/checkpoints/last.ckpt."


def test_reconstruct_samples_the_exact_conditional_of_the_gaussian_checkpoint(gaussian_ckpt, tmp_path, capsys):
    """In standardised units p(x, z) = N(0, I / GAMMA), so a missing coordinate d given the rest is N(mean_d,
    std_d^2 / GAMMA) in data units: the samples' mean and variance within 5 standard errors (MALA is exact)."""
    model = load(gaussian_ckpt)
    mean, std = model.module.data_mean.double(), model.module.data_std.double()
    x = np.array([[np.nan, 1.0], [0.5, np.nan], [np.nan, -2.0]])
    s = 3000
    out = reconstruct(model, x, s, seed=0, start="prior", check="none")
    assert out["samples"].shape == (3, s, 2) and out["z"].shape == (3, s, 1)
    assert np.array_equal(out["missing"], np.isnan(x))
    assert np.array_equal(out["samples"][~np.isnan(x)[:, None, :].repeat(s, 1)], np.repeat(x[~np.isnan(x)], s))
    for b, d in ((0, 0), (1, 1), (2, 0)):
        draws = torch.from_numpy(out["samples"][b, :, d]).double()
        sd = float(std[d]) / math.sqrt(GAMMA)
        assert abs(float(draws.mean()) - float(mean[d])) < 5 * sd / math.sqrt(s)
        assert abs(float(draws.var()) / sd**2 - 1) < 5 * math.sqrt(2 / s)
    np.save(tmp_path / "partial.npy", x)
    code, printed, _ = run_command(reconstruct_main, [f"ckpt={gaussian_ckpt}", f"data={tmp_path / 'partial.npy'}",
                                                      "n_samples=8", f"out={tmp_path / 'recon.npz'}"], capsys)
    assert code == 0 and "to " + str(tmp_path / "recon.npz") in printed
    with np.load(tmp_path / "recon.npz") as saved:
        assert saved["samples"].shape == (3, 8, 2) and saved["mean"].shape == (3, 2)
        assert saved["between_set_t"].shape == saved["disagree"].shape == (3,)
        bad = int(saved["disagree"].sum())
    assert printed.strip().splitlines()[-1].startswith(f"chains from the two start sets disagree on {bad} of 3 data")


def test_reconstruct_starts_at_the_training_data_nearest_in_the_observed_coordinates(ckpt):
    """start=neighbours with no steps: chain s of a datum holds the missing coordinate of its s-th nearest
    training datum, nearest by the observed coordinate alone (standardised), and the observed one unchanged."""
    model = load(ckpt)
    train = model.run_data().raw["train"].double()
    x = np.array([[0.3, np.nan], [np.nan, -0.4]])
    out = reconstruct(model, x, 4, n_steps=0, seed=0, check="none")
    std = model.module.data_std.double()
    for b, (seen, hidden) in enumerate(((0, 1), (1, 0))):
        distance = ((train[:, seen] - float(x[b, seen])) / std[seen]).abs()
        nearest = distance.topk(4, largest=False).indices
        np.testing.assert_allclose(out["samples"][b, :, hidden], train[nearest, hidden].numpy(), rtol=1e-5)
        assert np.all(out["samples"][b, :, seen] == np.float32(x[b, seen]))
        np.testing.assert_array_equal(out["z"][b], model.particles[nearest, 0].numpy())
