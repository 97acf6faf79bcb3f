"""The normalizing-flow baseline: its NLL in data units matches the true density of Gaussian data."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.flow import conditional_mala, fit_flow, flow_nll, flow_sample, gaussian_nll

pytest.importorskip("zuko", reason="the flow baseline needs the bench extra: pip install -e '.[bench]'")


@pytest.mark.slow
def test_flow_nll_in_data_units_matches_the_true_gaussian() -> None:
    gen = torch.Generator().manual_seed(0)
    cov = torch.tensor([[4.0, 1.2], [1.2, 0.9]])
    mean = torch.tensor([3.0, -20.0])
    chol = torch.linalg.cholesky(cov)
    x_train = mean + torch.randn(4000, 2, generator=gen) @ chol.T
    x_test = mean + torch.randn(2000, 2, generator=gen) @ chol.T
    flow, m, s = fit_flow(x_train, steps=600, transforms=2, hidden=32)
    gap = float((flow_nll(flow, m, s, x_test) - gaussian_nll(x_test, mean, cov)).mean())
    # a fitted density cannot beat the truth on fresh data beyond the Monte-Carlo error of the mean log-ratio
    # (its spread is well below 1 nat here, so 5 / sqrt(2000) bounds it); a missing Jacobian would shift it by
    # sum_d log sigma_d = 0.64
    assert -5 / math.sqrt(2000) < gap < 0.1, gap
    samples = flow_sample(flow, m, s, 4000)
    assert torch.allclose(samples.mean(0), mean, atol=0.15)
    assert torch.allclose(samples.var(0), cov.diagonal(), rtol=0.15)


def test_conditional_mala_samples_the_gaussian_conditional() -> None:
    """MALA on a density's exact log density, the observed coordinates fixed, samples x_h | x_o: for a Gaussian
    that conditional is N(mu_h + C_ho C_oo^-1 (x_o - mu_o), C_hh - C_ho C_oo^-1 C_oh), from chains started far off."""
    gen = torch.Generator().manual_seed(0)
    cov = torch.tensor([[1.0, 0.6, 0.3], [0.6, 1.0, 0.5], [0.3, 0.5, 0.8]], dtype=torch.float64)
    mu = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    normal = torch.distributions.MultivariateNormal(mu, cov)
    x = torch.tensor([[1.5, 0.0, 0.0], [-2.0, 0.0, 0.0]], dtype=torch.float64)
    hidden, n = [1, 2], 4000
    starts = torch.full((2, n, 2), 4.0, dtype=torch.float64)
    samples, h = conditional_mala(normal.log_prob, x, hidden, starts, 300, gen)
    gain = cov[1:, :1] / cov[0, 0]
    cond_cov = cov[1:, 1:] - gain @ cov[:1, 1:]
    for b in range(2):
        cond_mean = mu[1:] + gain[:, 0] * (x[b, 0] - mu[0])
        se = (cond_cov.diagonal() / n).sqrt()  # chains are independent: the standard error of the mean of n draws
        assert ((samples[b].mean(0) - cond_mean).abs() < 5 * se).all(), (samples[b].mean(0), cond_mean)
        # a variance of n Gaussian draws has relative standard error sqrt(2 / n) (0.022 here)
        emp = torch.cov(samples[b].T)
        assert torch.allclose(emp, cond_cov, atol=5 * math.sqrt(2 / n) * float(cond_cov.diagonal().max())), emp
    assert 0.0 < h < 10.0
