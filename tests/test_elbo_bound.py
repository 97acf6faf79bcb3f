"""The ELBO of a trained model's persistent particles lies below its exact log-likelihood (quadrature)."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from lvebm_lightning.metrics import choose_box, elbo, log_marginal, log_partition
from lvebm_lightning.training.run import build_model, instantiate_callbacks


@pytest.mark.slow
def test_particle_elbo_is_below_exact_log_likelihood(make_cfg):
    # gamma > 0 keeps exp(-E) integrable so that the quadrature is exact up to its (checked) edge mass.
    cfg = make_cfg(
        "trainer.max_steps=150", "logger=csv", "model.energy.gamma=0.5", "sampler.posterior.n_particles=4",
        "sampler.posterior.n_steps=10", "sampler.negative.n_steps=10", "~callbacks.gallery", "~callbacks.metrics",
        "~callbacks.best_checkpoint",
    )
    datamodule = instantiate(cfg.data).prepare()
    model = build_model(cfg, datamodule)
    trainer = instantiate(cfg.trainer, callbacks=instantiate_callbacks(cfg.callbacks), logger=False)
    trainer.fit(model, datamodule=datamodule)

    store = model.posterior.store
    index = torch.arange(64)
    x = datamodule.splits["train"][index]
    particles = store.get(index)
    assert particles.shape[1] == 4  # K >= 2: the bandwidth rule scores Silverman's value beside the grid
    # The box covers the data in x and, in z, far more than the confinement lets the mass reach (checked).
    x_lo, x_hi = choose_box(datamodule.splits["train"].double(), margin=1.0)
    lo = torch.cat([x_lo.float(), torch.tensor([-30.0])])
    hi = torch.cat([x_hi.float(), torch.tensor([30.0])])
    quad = log_partition(model.energy, model.dx, model.dz, lo, hi, n_per_dim=128)
    # log Z enters the ELBO and log p(x) alike; the check keeps it meaningful as a reported number.
    assert quad.edge_mass < 1e-3, "the box must hold the model's mass for the quadrature to be exact"
    log_p = log_marginal(model.energy, x, model.dz, lo[model.dx :], hi[model.dx :], n_per_dim=6000) - quad.log_z

    result = elbo(model.energy, x, particles, quad.log_z, n_samples=2048, generator=torch.Generator().manual_seed(0))
    gap = log_p - result.elbo  # >= 0 for every datum, up to Monte-Carlo error of the ELBO estimate (one-sided)
    assert bool((gap > -4 * result.elbo_std_err).all())
    # The mean gap is positive by more than 3 of its standard errors: a mixture of K = 4 Gaussians is not the exact
    # posterior, so the bound is strictly below log p(x) (KL(q || p(z | x)) > 0) and the estimate resolves it.
    mean_se = float(result.elbo_std_err.pow(2).mean().sqrt()) / math.sqrt(len(gap))
    assert float(gap.mean()) > 3 * mean_se
    # The importance-weighted bound is tighter than the ELBO and, in expectation, still below log p(x). Its
    # Monte-Carlo error is measured from a second, independent estimate: Var(a - b) = 2 Var(one estimate).
    again = elbo(model.energy, x, particles, quad.log_z, n_samples=2048, generator=torch.Generator().manual_seed(1))
    iw_se = float((result.iw_bound - again.iw_bound).std() / math.sqrt(2 * len(gap)))
    assert float((result.iw_bound - result.elbo).mean()) > 3 * mean_se
    assert float((log_p - result.iw_bound).mean()) > -3 * iw_se
