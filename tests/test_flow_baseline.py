"""The normalizing-flow baseline: its NLL in data units matches the true density of Gaussian data."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.flow import fit_flow, flow_nll, flow_sample, gaussian_nll

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
