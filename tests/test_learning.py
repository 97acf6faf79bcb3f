"""Training learns: a CPU run on ``linear_gaussian`` (probabilistic PCA) reaches the closed-form ML fit.

The oracle is ``linear_gaussian_ml`` of the training split: N(mu_ML, C_ML), the best any Gaussian (and, for dx = 2,
dz = 1, any linear-Gaussian model) does on these data. An LVEBM trained by maximum likelihood should reproduce
its x-marginal. Two checks, on the model's own distribution (fresh MALA chains from N(0, I), not the pool):

- **Covariance and mean**, in the ML fit's whitened frame (standardised units): the model samples' covariance
  C^ gives A = C_ML^(-1/2) C^ C_ML^(-1/2), whose eigenvalues should be 1, and the whitened mean offset
  m = C_ML^(-1/2)(mean^ - mu_ML) should be 0. Sample size: n independent chains give eigenvalues of A within
  ~ sqrt(2 / n) of 1 and |m_j| within ~ 1 / sqrt(n) (standard errors), so 5 of them are allowed; budget: the run
  is short, so its own fit may be off by ``eps`` relative variance and ``delta`` standard deviations of mean.
- **Test NLL** (exact, by quadrature, in data units with the standardisation's Jacobian) minus the ML fit's NLL
  on the same held-out data: allowed 4 standard errors of that mean difference over the n_test data, plus the
  budget's share: the excess NLL E[log N_ML - log N_model] ~ KL(N_ML || N_model) of a model whose whitened
  variances are off by a factor (1 + eps) either way and whose mean is off by ``delta`` standard deviations in
  every direction, at its worst (variances too small): dx (eps - log(1 + eps) + (1 + eps) delta^2) / 2.

A flipped loss sign (ascent) pushes mass off the data, a pool that is never written back trains against N(0, I)
draws moved by a few steps, and a wrong noise scale targets a law of the wrong width: each misses by far more.
The fast run (150 steps, a 32-unit net) allows eps = 0.2, delta = 0.1; the slow one (1500 steps) eps = delta = 0.05.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from lvebm_lightning.data.systems import linear_gaussian_ml
from lvebm_lightning.metrics.evaluation import data_nll, quadrature
from lvebm_lightning.training.run import build_model, instantiate_callbacks
from tests.conftest import compose_config

BASE = [
    "data=linear_gaussian", "data.n_val=256", "data.n_test=2000", "logger=csv", "~callbacks.gallery",
    "~callbacks.metrics", "~callbacks.best_checkpoint", "callbacks.model_checkpoint.every_n_train_steps=100000",
    "+trainer.limit_val_batches=0", "test=false", "+trainer.enable_progress_bar=false", "model.energy.width=32",
    "sampler.posterior.step_size=0.05", "sampler.negative.step_size=0.05", "sampler.negative.pool_size=1024",
]


def fit_and_compare(run_dir, overrides: list[str], n_chains: int, chain_steps: int) -> dict[str, float]:
    """Train, then measure the model against the ML fit: the largest |log eigenvalue| of A, the largest |m_j|,
    the test-NLL excess over the ML fit and its standard error (module docstring)."""
    cfg = compose_config(run_dir, BASE + overrides)
    datamodule = instantiate(cfg.data).prepare()
    pl.seed_everything(int(cfg.seed), verbose=False)  # as train() does: the energy's initial weights are fixed
    model = build_model(cfg, datamodule)
    trainer = instantiate(cfg.trainer, callbacks=instantiate_callbacks(cfg.callbacks), logger=False)
    trainer.fit(model, datamodule=datamodule)

    xz = model.sample_joint(n_chains, n_steps=chain_steps, generator=torch.Generator().manual_seed(123))
    x = xz[:, : model.dx].double()
    ml_std = linear_gaussian_ml(datamodule.splits["train"].numpy(), dz=1)  # the oracle, standardised units
    root = np.linalg.cholesky(np.linalg.inv(ml_std.cov))  # L with L L^T = C_ML^-1: L^T C_ML L = I
    whitened = torch.from_numpy(root.T) @ torch.cov(x.T) @ torch.from_numpy(root)
    offset = (x.mean(0) - torch.from_numpy(ml_std.mean)) @ torch.from_numpy(root)

    box = quadrature(model.energy, model.dx, model.dz, datamodule.splits["train"][:2000], xz, 48, 0.3)
    assert box["edge_mass"] < 1e-3
    test_nll = data_nll(model.energy, datamodule.splits["test"], model.dz, box, model.data_std.log().sum())
    ml = linear_gaussian_ml(datamodule.raw["train"].numpy(), dz=1)  # data units
    ml_nll = -torch.distributions.MultivariateNormal(
        torch.from_numpy(ml.mean), torch.from_numpy(ml.cov)
    ).log_prob(datamodule.raw["test"].double())
    excess = test_nll - ml_nll
    return {
        "log_eig": float(torch.linalg.eigvalsh(whitened).log().abs().max()),
        "offset": float(offset.abs().max()),
        "excess": float(excess.mean()),
        "excess_se": float(excess.std() / math.sqrt(len(excess))),
    }


def assert_reaches_ml(result: dict[str, float], n_chains: int, eps: float, delta: float, dx: int = 2) -> None:
    assert result["log_eig"] < math.log(1 + eps) + 5 * math.sqrt(2 / n_chains), result
    assert result["offset"] < delta + 5 / math.sqrt(n_chains), result
    budget_kl = dx * (eps - math.log(1 + eps) + (1 + eps) * delta**2) / 2
    assert abs(result["excess"]) < budget_kl + 4 * result["excess_se"], result


def test_a_short_run_reaches_the_ml_fit(tmp_path, one_thread):
    overrides = ["trainer.max_steps=150", "model.lr=1e-2", "data.n_train=2048", "data.batch_size=128",
                 "sampler.posterior.n_steps=5", "sampler.negative.n_steps=10"]
    result = fit_and_compare(tmp_path, overrides, n_chains=4000, chain_steps=400)
    assert_reaches_ml(result, 4000, eps=0.2, delta=0.1)


@pytest.mark.slow
def test_a_longer_run_reaches_the_ml_fit_closely(tmp_path, one_thread):
    overrides = ["trainer.max_steps=1500", "model.lr=3e-3", "data.n_train=8192", "data.batch_size=256",
                 "sampler.posterior.n_steps=10", "sampler.negative.n_steps=20"]
    result = fit_and_compare(tmp_path, overrides, n_chains=10000, chain_steps=600)
    assert_reaches_ml(result, 10000, eps=0.05, delta=0.05)
