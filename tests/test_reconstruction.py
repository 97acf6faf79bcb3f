"""Conditional sampling against closed-form Gaussian conditionals, and the scores against analytic answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lvebm_lightning.inference.reconstruction import ReconstructionError, conditional_sample, read_partial
from lvebm_lightning.langevin import LangevinConfig
from lvebm_lightning.metrics.reconstruction import central_coverage, cv_knn_r2, energy_score, knn_predict

# A joint Gaussian over (x1, x2, x3, z): E = y^T P y / 2 with a fixed, well-conditioned precision P.
_A = torch.tensor([[1.0, 0.3, -0.2, 0.5], [0.0, 1.0, 0.4, -0.3], [0.0, 0.0, 1.0, 0.6], [0.0, 0.0, 0.0, 1.0]],
                  dtype=torch.float64)
PRECISION = _A @ _A.T + 0.5 * torch.eye(4, dtype=torch.float64)
DX = 3


def gaussian_energy(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    y = torch.cat([x, z], -1)
    return 0.5 * ((y @ PRECISION.to(y)) * y).sum(-1)


def closed_form_conditional(x_obs: torch.Tensor, missing: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of the unobserved block u = (x_m, z) given x_o: mean = -P_uu^-1 P_uo x_o, cov = P_uu^-1."""
    free = torch.cat([missing, torch.tensor([True])])
    p_uu, p_uo = PRECISION[free][:, free], PRECISION[free][:, ~free]
    cov = torch.linalg.inv(p_uu)
    return -cov @ p_uo @ x_obs[~missing].double(), cov


def test_conditional_sample_matches_the_gaussian_conditional_law() -> None:
    """MALA with x_o held fixed samples p(x_m, z | x_o): means and variances within 5 standard errors of the
    closed form, for two rows with different missing sets; observed coordinates come back unchanged."""
    x_obs = torch.tensor([[0.7, float("nan"), -1.2], [float("nan"), float("nan"), 0.4]], dtype=torch.float64)
    missing = torch.isnan(x_obs)
    s = 2000
    # the slowest conditional mode relaxes in about 1 / (h lambda_min(P_uu)) = 20 steps; 200 leave no visible bias
    config = LangevinConfig(step_size=0.1, n_steps=200, kernel="mala")
    x, z = conditional_sample(gaussian_energy, x_obs, missing, 1, s, config, torch.Generator().manual_seed(0))
    assert torch.equal(x[~missing.unsqueeze(1).expand_as(x)], x_obs.unsqueeze(1).expand_as(x)[~missing.unsqueeze(1)
                       .expand_as(x)])
    for b in range(2):
        mean, cov = closed_form_conditional(x_obs[b], missing[b])
        u = torch.cat([x[b][:, missing[b]], z[b]], -1)
        std = cov.diagonal().sqrt()
        assert ((u.mean(0) - mean).abs() < 5 * std / math.sqrt(s)).all(), (u.mean(0), mean)
        # the sample variance of n normal draws has relative standard error sqrt(2 / n)
        assert ((u.var(0) / cov.diagonal() - 1).abs() < 5 * math.sqrt(2 / s)).all(), (u.var(0), cov.diagonal())


def test_read_partial_refuses_what_cannot_be_reconstructed(tmp_path) -> None:
    ok = np.array([[1.0, np.nan], [np.nan, 2.0]])
    assert np.array_equal(np.isnan(read_partial(ok, 2)), np.isnan(ok))
    cases = [
        (np.ones((2, 2)), "no NaN entries"),
        (np.array([[np.nan, np.nan], [1.0, np.nan]]), "row 0 is all NaN"),
        (np.array([[1.0, np.nan, 2.0]]), r"shape \(1, 3\) but the model needs \[B, 2\]"),
        (np.array([[np.inf, np.nan]]), "infinite values"),
        (tmp_path / "none.npy", "data file not found"),
    ]
    for data, message in cases:
        with pytest.raises(ReconstructionError, match=message):
            read_partial(data, 2)


def test_energy_score_is_the_crps_of_a_gaussian_in_one_dimension() -> None:
    """For X ~ N(mu, s^2) and truth y: CRPS = s [w (2 Phi(w) - 1) + 2 phi(w) - 1 / sqrt(pi)], w = (y - mu) / s."""
    gen = torch.Generator().manual_seed(1)
    s, n = 1.5, 4000
    samples = (0.3 + s * torch.randn(3, n, 1, generator=gen, dtype=torch.float64))
    truth = torch.tensor([[0.3], [2.0], [-4.0]], dtype=torch.float64)
    w = (truth[:, 0] - 0.3) / s
    normal = torch.distributions.Normal(0.0, 1.0)
    exact = s * (w * (2 * normal.cdf(w) - 1) + 2 * normal.log_prob(w).exp() - 1 / math.sqrt(math.pi))
    # |X - y| and |X - X'| / 2 are Lipschitz in Gaussian draws, so each term's standard error is below s / sqrt(n)
    # (Gaussian Poincare inequality); 5 of each bound the estimate's error. Dropping the 1/2 moves it by s / sqrt(pi).
    assert torch.allclose(energy_score(samples, truth), exact, atol=10 * s / math.sqrt(n))
    assert energy_score(samples, truth)[1] > energy_score(samples, truth)[0]


def test_central_coverage_of_calibrated_and_overconfident_samples() -> None:
    gen = torch.Generator().manual_seed(2)
    b, s = 4000, 400
    truth = torch.randn(b, 1, generator=gen, dtype=torch.float64)
    calibrated = torch.randn(b, s, 1, generator=gen, dtype=torch.float64)
    narrow = 0.5 * calibrated
    # binomial standard error of a 0.9 share over b points, plus the quantiles' own error at S = 400
    assert abs(float(central_coverage(calibrated, truth)) - 0.9) < 5 * math.sqrt(0.09 / b) + 0.02
    assert float(central_coverage(narrow, truth)) < 0.65  # P(|N(0,1)| < 0.82) = 0.59


def test_knn_probe_recovers_a_smooth_function_and_not_noise() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(3000, 2, generator=gen, dtype=torch.float64)
    y = torch.stack([torch.sin(3 * x[:, 0]) + x[:, 1] ** 2, torch.randn(3000, generator=gen, dtype=torch.float64)], 1)
    r2 = cv_knn_r2(x, y, k=10)
    assert r2[0] > 0.97 and abs(float(r2[1])) < 0.15
    assert torch.allclose(knn_predict(x, y, x[:1], k=1), y[:1])
