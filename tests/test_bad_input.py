"""Bad input gets a one-line error naming the problem before any work starts, and nothing already written is
touched: config values and keys, the user's data file (``data=file data.path=...``) and the checkpoint."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from lvebm_lightning.config.compose import ConfigError, check_overrides
from lvebm_lightning.data.files import DataFileError
from lvebm_lightning.training.checkpointing import CheckpointError
from lvebm_lightning.training.run import train
from tests.conftest import CONF, compose_config

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["logger=csv", "~callbacks.gallery", "~callbacks.metrics", "~callbacks.best_checkpoint", "test=false",
         "trainer.max_steps=2", "+trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished run (2 steps); tests check that a failing command leaves its files exactly as they were."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train(compose_config(run, QUICK))
    return run


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder``: content hash and modification time (ns)."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def data_file(tmp: Path, kind: str) -> Path:
    x = np.random.default_rng(0).normal(size=(64, 2))
    if kind == "nan":
        x[10, 1] = np.nan
    elif kind == "inf":
        x[3, 0] = np.inf
    elif kind == "rank3":
        x = x.reshape(64, 2, 1)
    elif kind == "rank1":
        x = x[:, 0]
    elif kind == "no_rows":
        x = x[:0]
    elif kind == "too_few_to_split":
        x = x[:5]
    if kind == "strings":
        path = tmp / "data.csv"
        path.write_text("a,b\n1,2\n3,four\n5,6\n7,8\n")
        return path
    path = tmp / "data.npy"
    np.save(path, x)
    return path


def garbage(tmp: Path, kind: str) -> Path:
    path = tmp / f"{kind}.ckpt"
    if kind == "random_bytes":
        path.write_bytes(np.random.default_rng(1).bytes(4096))
    elif kind == "tensor_file":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "pickled_object":
        torch.save({"state_dict": {}, "hyper_parameters": {}, "callback": Path("x")}, path)
    return path


# name: (overrides given (tmp dir, trained run), error type, message pattern)
Case = tuple[Callable[[Path, Path], list[str]], type, str]
CASES: dict[str, Case] = {
    "unknown_dataset": (lambda t, r: ["data.name=mnist"], ConfigError,
                        r"unknown dataset data.name='mnist'; choose one of: double_well, .*data=file"),
    "file_without_path": (lambda t, r: ["data=file"], ConfigError, r"data=file needs the data file: data.path="),
    "zero_step_size": (lambda t, r: ["sampler.posterior.step_size=0"], ConfigError,
                       r"sampler.posterior.step_size must be a positive float, got 0"),
    "negative_step_size": (lambda t, r: ["sampler.negative.step_size=-0.01"], ConfigError,
                           r"sampler.negative.step_size must be a positive float, got -0.01"),
    "text_step_size": (lambda t, r: ["sampler.negative.step_size=small"], ConfigError,
                       r"sampler.negative.step_size must be a positive float, got 'small'"),
    "no_particles": (lambda t, r: ["sampler.posterior.n_particles=0"], ConfigError,
                     r"sampler.posterior.n_particles must be a positive int, got 0"),
    "unknown_posterior_kernel": (lambda t, r: ["sampler.posterior.kernel=hmc"], ConfigError,
                                 r"unknown Langevin kernel sampler.posterior.kernel='hmc'; choose one of: mala, ula, "
                                 r"e.g. sampler.posterior.kernel=mala"),
    "unknown_long_chain_kernel": (lambda t, r: ["sampler.long_chains.kernel=hmc"], ConfigError,
                                  r"sampler.long_chains.kernel='hmc'; choose one of: mala, ula, or null"),
    "unknown_negative_kernel": (lambda t, r: ["sampler.negative.kernel=MALA"], ConfigError,
                                r"unknown Langevin kernel sampler.negative.kernel='MALA'; choose one of: mala, ula"),
    "pool_smaller_than_batch": (lambda t, r: ["sampler.negative.pool_size=32"], ConfigError,
                                r"pool_size=32 is smaller than the negative batch \(64 per rank x 1 rank"),
    "bad_policy": (lambda t, r: ["model.divergence.policy=ignore"], ConfigError,
                   r"model.divergence.policy must be skip or raise, got 'ignore'"),
    "data_nan": (lambda t, r: ["data=file", f"data.path={data_file(t, 'nan')}"], DataFileError,
                 r"holds 1 NaN values, the first in row 10"),
    "data_inf": (lambda t, r: ["data=file", f"data.path={data_file(t, 'inf')}"], DataFileError,
                 r"holds 1 infinite values .* row 3"),
    "data_strings": (lambda t, r: ["data=file", f"data.path={data_file(t, 'strings')}"], DataFileError,
                     r"non-numeric entry 'four' at line 3, column 2"),
    "data_rank3": (lambda t, r: ["data=file", f"data.path={data_file(t, 'rank3')}"], DataFileError,
                   r"shape \(64, 2, 1\), but data must be 2-D \[N, dx\]"),
    "data_rank1": (lambda t, r: ["data=file", f"data.path={data_file(t, 'rank1')}"], DataFileError,
                   r"1-D array of shape \(64,\)"),
    "data_no_rows": (lambda t, r: ["data=file", f"data.path={data_file(t, 'no_rows')}"], DataFileError,
                     r"holds no data \(shape \(0, 2\)\)"),
    "data_too_few_to_split": (lambda t, r: ["data=file", f"data.path={data_file(t, 'too_few_to_split')}"],
                              DataFileError, r"5 rows cannot be split into train / val / test"),
    "data_missing": (lambda t, r: ["data=file", f"data.path={t / 'nope.npy'}"], DataFileError, r"no such data file"),
    "ckpt_missing": (lambda t, r: [f"ckpt_path={r / 'checkpoints' / 'nope.ckpt'}"], CheckpointError,
                     r"Checkpoint not found: .*nope.ckpt; pass ckpt_path=<run dir>/checkpoints/last.ckpt"),
    "ckpt_folder": (lambda t, r: [f"ckpt_path={r / 'checkpoints'}"], CheckpointError, r"is a folder; pass the \.ckpt"),
    "ckpt_random_bytes": (lambda t, r: [f"ckpt_path={garbage(t, 'random_bytes')}"], CheckpointError,
                          r"random_bytes.ckpt is not a readable checkpoint"),
    "ckpt_not_lightning": (lambda t, r: [f"ckpt_path={garbage(t, 'tensor_file')}"], CheckpointError,
                           r"tensor_file.ckpt is not an lvebm-lightning checkpoint"),
    "ckpt_needs_pickle": (lambda t, r: [f"ckpt_path={garbage(t, 'pickled_object')}"], CheckpointError,
                          r"holds Python objects that only an unsafe load \(weights_only=False\) could read"),
    "ckpt_other_dz": (lambda t, r: [f"ckpt_path={r / 'checkpoints' / 'last.ckpt'}", "model.dz=2"], CheckpointError,
                      r"does not fit this run \(dz: checkpoint 1 vs run 2; energy.net.0.weight: checkpoint shape "
                      r"\[128, 3\] vs run \[128, 4\]"),
    "ckpt_other_data_size": (lambda t, r: [f"ckpt_path={r / 'checkpoints' / 'last.ckpt'}", "data.n_train=500"],
                             CheckpointError, r"\(n_data: checkpoint 512 vs run 500\)"),
    "ckpt_other_dx": (lambda t, r: [f"ckpt_path={r / 'checkpoints' / 'last.ckpt'}", "data=lorenz63"],
                      CheckpointError, r"dx: checkpoint 2 vs run 3"),
    "ckpt_other_width": (lambda t, r: [f"ckpt_path={r / 'checkpoints' / 'last.ckpt'}", "model.energy.width=64"],
                         CheckpointError, r"energy.net.0.weight: checkpoint shape \[128, 3\] vs run \[64, 3\]"),
    "ckpt_other_k": (lambda t, r: [f"ckpt_path={r / 'checkpoints' / 'last.ckpt'}", "sampler.posterior.n_particles=4"],
                     CheckpointError, r"particles per datum K: checkpoint 1 vs run 4"),
    "data_option_unknown": (lambda t, r: ["data=phi4", "data.options.kappaa=0.2"], ConfigError,
                            r"dataset 'phi4' has no parameter 'kappaa' \(data.options\); its parameters: burn_in"),
    "data_option_wrong_type": (lambda t, r: ["data=phi4", "data.options.kappa=abc"], ConfigError,
                               r"data.options.kappa='abc' is out of range: kappa must be a finite number"),
    "data_option_out_of_range": (lambda t, r: ["data=pendulum", "data.options.h_max=5.0"], ConfigError,
                                 r"data.options.h_max=5.0 is out of range: h_max must be a number below the "
                                 r"separatrix energy"),
    "data_option_empty_lattice": (lambda t, r: ["data=phi4", "data.options.side=0"], ConfigError,
                                  r"data.options.side=0 is out of range: side must be a whole number >= 2"),
    "data_options_of_a_file": (lambda t, r: ["data=file", f"data.path={data_file(t, 'ok')}", "data.options.std=1"],
                               ConfigError, r"data.options \(std\) set the parameters of a generated dataset; "
                               r"data=file takes none"),
    "conv_energy_off_a_lattice": (lambda t, r: ["model/energy=conv"], ConfigError,
                                  r"ConvEnergy needs a square lattice \(dx = side\^2\) .* got dx=2"),
    "decoder_energy_without_latents": (lambda t, r: ["model/energy=decoder", "model.dz=0"], ConfigError,
                                       r"DecoderEnergy needs dx >= 1 and dz >= 1 \(model.dz\), got dx=2, dz=0"),
    "decoder_energy_sigma": (lambda t, r: ["model/energy=decoder", "model.energy.sigma=0"], ConfigError,
                             r"DecoderEnergy needs sigma > 0, got 0"),
    "energy_activation": (lambda t, r: ["model/energy=conv", "data=phi4", "model.energy.activation=relu"], ConfigError,
                          r"Unknown activation 'relu'; choose one of"),
    "timed_checkpoint_interval": (lambda t, r: ["callbacks.timed_checkpoint.train_time_interval.minutes=-1"],
                                  ConfigError, r"callbacks.timed_checkpoint: train_time_interval must be a time "
                                  r"interval >= 0"),
    "ckpt_other_pool": (lambda t, r: [f"ckpt_path={r / 'checkpoints' / 'last.ckpt'}", "sampler.negative.pool_size=256"],
                        CheckpointError, r"sampler.negative.pool_size: checkpoint 512 vs run 256"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_in_one_line_before_anything_is_written(case, tmp_path, trained):
    overrides, error, pattern = CASES[case]
    before = snapshot(trained)
    cfg = compose_config(tmp_path / "run", [*QUICK, *overrides(tmp_path, trained)])
    with pytest.raises(error, match=pattern) as info:
        train(cfg)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()  # no run folder, no logger, no checkpoint
    assert snapshot(trained) == before


@pytest.mark.parametrize("value", ["", "ofline"])
def test_a_wandb_mode_in_the_environment_that_wandb_rejects_fails_in_one_line(value, tmp_path, monkeypatch):
    """W&B itself would stop the run later with a pydantic traceback (seen with an empty WANDB_MODE)."""
    monkeypatch.setenv("WANDB_MODE", value)
    cfg = compose_config(tmp_path / "run", ["logger=default" if o == "logger=csv" else o for o in QUICK])
    with pytest.raises(ConfigError, match=r"environment variable WANDB_MODE=.* is not a W&B mode; unset it") as info:
        train(cfg)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.lrr=1"], "unknown config key 'model.lrr'; check its spelling"),
    (["data=mnist"], "unknown data option 'mnist' (data=mnist); choose one of: double_well, eight_gaussians, file,"),
    (["trainer=tpu"], "unknown trainer option 'tpu' (trainer=tpu); choose one of: cpu, ddp, ddp_cpu, default."),
    (["seed=[1"], "cannot parse the command line"),
    (["sampler.posterior.n_particles=0"], "sampler.posterior.n_particles must be a positive int, got 0"),
    (["sampler.negative.kernel=hmc"], "unknown Langevin kernel sampler.negative.kernel='hmc'; choose one of: mala,"),
])
def test_command_line_is_checked_before_hydra_starts(overrides, message):
    with pytest.raises(ConfigError) as info:
        check_overrides(CONF, "train", overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_train_py_reports_a_bad_config_in_one_line_without_a_run_folder(tmp_path):
    result = cli("debug=fast", "sampler.negative.step_size=0", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "lvebm: error: sampler.negative.step_size must be a positive float, got 0; set "
        "sampler.negative.step_size=<value > 0>."
    ]
    assert not (tmp_path / "run").exists()  # checked before Hydra made a run folder


def test_train_py_leaves_an_existing_run_untouched_when_its_checkpoint_does_not_fit(trained):
    before = snapshot(trained / "checkpoints")
    result = cli("debug=fast", *QUICK, "trainer.accelerator=cpu", f"hydra.run.dir={trained}",
                 f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}", "model.dz=2")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith("lvebm: error: Checkpoint ")
    assert "dz: checkpoint 1 vs run 2" in result.stderr.splitlines()[-1]
    assert snapshot(trained / "checkpoints") == before
