"""The fitted Gaussian encoder against exact answers: tight on a Gaussian posterior, short by the best Gaussian's
KL on a bimodal one (computed by quadrature in z)."""

from __future__ import annotations

import math

import torch

from lvebm_lightning.metrics.fitted_encoder import encoder_bounds, fit_encoder

W = torch.tensor([[1.5], [1.0]])
MU = torch.tensor([0.5, -0.5])
SIGMA = 0.5


def ppca_energy(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """E = |z|^2 / 2 + |x - W z - mu|^2 / (2 sigma^2): p(x) = N(mu, W W^T + sigma^2 I), p(z | x) Gaussian."""
    r = x - z @ W.T.to(z) - MU.to(z)
    return 0.5 * (z**2).sum(-1) + 0.5 * (r**2).sum(-1) / SIGMA**2


PPCA_LOG_Z = 0.5 * 3 * math.log(2 * math.pi) + 2 * math.log(SIGMA)


def test_fitted_encoder_is_tight_on_a_gaussian_posterior() -> None:
    gen = torch.Generator().manual_seed(0)
    cov = W @ W.T + SIGMA**2 * torch.eye(2)
    x = torch.distributions.MultivariateNormal(MU, cov).sample((2000,))
    fitted = fit_encoder(ppca_energy, x, 1, max_steps=1500, check_every=250, generator=gen)
    elbo, iw = encoder_bounds(ppca_energy, fitted.encoder, x[:500], PPCA_LOG_Z, 256, gen)
    exact = torch.distributions.MultivariateNormal(MU, cov).log_prob(x[:500]).double()
    gap = exact - elbo
    # KL(q || p(z|x)) >= 0 and the best Gaussian is exact here: the gap is the fit's residual, a few 0.01 nats;
    # its Monte-Carlo error over 500 x 256 draws is far below that.
    assert float(gap.mean()) > -0.01 and float(gap.mean()) < 0.03, float(gap.mean())
    assert float((exact - iw).mean()) < float(gap.mean()) + 1e-3


def bimodal_energy(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """E = 4 (z^2 - 1)^2 + |x|^2 / 2: p(z | x) has two modes at z = ±1 for every x."""
    return 4.0 * (z[..., 0] ** 2 - 1.0) ** 2 + 0.5 * (x**2).sum(-1)


def test_fitted_encoder_falls_short_by_the_best_gaussian_kl_on_a_bimodal_posterior() -> None:
    gen = torch.Generator().manual_seed(1)
    zs = torch.linspace(-4, 4, 40001, dtype=torch.float64)
    log_pz = -4.0 * (zs**2 - 1.0) ** 2
    log_z_z = torch.logsumexp(log_pz, 0) + math.log(float(zs[1] - zs[0]))
    log_z = float(log_z_z) + math.log(2 * math.pi)  # the x part: integral exp(-|x|^2/2) over R^2
    x = torch.randn(1000, 2, generator=gen)
    fitted = fit_encoder(bimodal_energy, x, 1, max_steps=1500, generator=gen)
    elbo, _ = encoder_bounds(bimodal_energy, fitted.encoder, x, log_z, 256, gen)
    exact = -0.5 * (x.double() ** 2).sum(-1) - math.log(2 * math.pi)
    # the best Gaussian q(z) for this p(z) (found by a grid search over its mean and scale) misses by its KL
    dz = float(zs[1] - zs[0])
    best_kl = min(
        float(((lq := -0.5 * ((zs - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)).exp()
               * (lq - (log_pz - log_z_z))).sum() * dz)
        for m in torch.linspace(0.8, 1.2, 21).tolist() for s in torch.linspace(0.15, 0.5, 36).tolist()
    )
    gap = float((exact - elbo).mean())
    assert best_kl > 0.5  # a single Gaussian cannot cover both modes
    # no Gaussian beats the best one (up to the grid's step and a Monte-Carlo error of about 0.003 nats), and the
    # fit gets within a few 0.01 nats of it
    assert best_kl - 0.02 < gap < best_kl + 0.05, (gap, best_kl)
