"""The reported metrics against answers the code under test does not compute.

- ``w2`` on equal-size clouds against an independent assignment solver: for uniform weights on n points a side the
  optimal coupling is a permutation (Birkhoff), so W2^2 = min_sigma (1/n) sum_i |a_i - b_sigma(i)|^2, solved by
  ``scipy.optimize.linear_sum_assignment`` on the squared Euclidean cost.
- ``sliced_w2`` of a cloud and its own shift by Delta: every 1-D projection is the same cloud shifted by
  <theta, Delta>, so W2(theta) = |<theta, Delta>| exactly and SW2^2 = mean_l <theta_l, Delta>^2, whose expectation
  over theta uniform on S^(d-1) is |Delta|^2 / d. Its Monte-Carlo error over L projections follows from
  E u^2 = 1 / d and E u^4 = 3 / (d (d + 2)) for u = <theta, e>: Var <theta, Delta>^2 = |Delta|^4 (3 / (d (d + 2))
  - 1 / d^2); 4 standard errors are allowed.
- ``elbo`` with one particle and one bandwidth on the linear-Gaussian model of ``test_metrics_elbo``: q is a
  Gaussian and E is quadratic, so the ELBO is in closed form (see the test).
- ``data_nll``: the exact NLL in data units of a Gaussian model, whose data-unit density is the Gaussian pushed
  through x = mean + sigma x_std (torch.distributions), against quadrature plus the standardisation's Jacobian.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from lvebm_lightning.metrics import elbo, sliced_w2, w2
from lvebm_lightning.metrics.evaluation import data_nll, quadrature
from tests.test_metrics_elbo import (
    DZ,
    LOADING,
    LOG_Z_LINEAR,
    NOISE_SD,
    _linear_gaussian_problem,
    linear_gaussian_energy,
)


def _assignment_costs(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(W2, W1) of two equal-size clouds by the Hungarian algorithm, each on its own cost."""
    sq = cdist(a, b, "sqeuclidean")
    rows, cols = linear_sum_assignment(sq)
    euclid = cdist(a, b, "euclidean")
    rows1, cols1 = linear_sum_assignment(euclid)
    return math.sqrt(sq[rows, cols].mean()), float(euclid[rows1, cols1].mean())


@pytest.mark.parametrize(("n", "dim", "shift"), [(60, 1, 0.4), (150, 2, 1.7), (120, 5, 0.9)])
def test_w2_equals_the_assignment_solver(n, dim, shift):
    rng = np.random.default_rng(n + dim)
    a = rng.standard_normal((n, dim))
    b = 1.3 * rng.standard_normal((n, dim)) + shift
    exact, w1 = _assignment_costs(a, b)
    got = float(w2(torch.from_numpy(a), torch.from_numpy(b), max_samples=n))
    assert got == pytest.approx(exact, abs=1e-9)
    # ... and far from what a wrong metric would give: W1, or W2 left squared.
    assert abs(got - w1) > 1e-3 and abs(got - exact**2) > 1e-2


def test_w2_of_unequal_clouds_is_the_assignment_of_their_replicated_points():
    # n = 2 m: mu_n and nu_m with nu's points each doubled are the same measure; the doubled problem is square.
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((80, 2)), rng.standard_normal((40, 2)) + 0.5
    exact, _ = _assignment_costs(a, np.repeat(b, 2, axis=0))
    assert float(w2(torch.from_numpy(a), torch.from_numpy(b))) == pytest.approx(exact, abs=1e-9)


@pytest.mark.parametrize("dim", [2, 6])
def test_sliced_w2_of_shifted_isotropic_gaussians_matches_its_closed_form(dim):
    n_projections = 400
    a = torch.randn(500, dim, generator=torch.Generator().manual_seed(dim), dtype=torch.float64)
    delta = torch.linspace(1.0, -0.5, dim, dtype=torch.float64)
    got = float(sliced_w2(a, a + delta, n_projections=n_projections, seed=3))
    norm2 = float(delta @ delta)
    se = norm2**2 * (3 / (dim * (dim + 2)) - 1 / dim**2)
    se = math.sqrt(se / n_projections)
    assert abs(got**2 - norm2 / dim) < 4 * se
    assert 0.5 * math.sqrt(norm2 / dim) < got < 0.9 * math.sqrt(norm2)  # neither 0 nor the full W2 = |Delta|


def test_quadrature_nll_in_data_units_includes_the_standardisation_jacobian():
    # Standardised model: E(x, z) = y^T P y / 2, y = (x, z), dx = 2, dz = 1, so x_std ~ N(0, Sigma_xx), Sigma = P^-1.
    precision = torch.tensor([[1.5, 0.4, 0.3], [0.4, 2.0, -0.5], [0.3, -0.5, 1.2]])

    def energy(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = torch.cat([x, z], dim=-1)
        return 0.5 * ((y @ precision.to(y)) * y).sum(-1)

    mean, std = torch.tensor([3.0, -1.0]), torch.tensor([4.0, 0.5])
    cov_std = torch.linalg.inv(precision.double())[:2, :2]
    x_std = torch.randn(300, 2, generator=torch.Generator().manual_seed(0)) @ torch.linalg.cholesky(cov_std).float().T
    model_xz = torch.randn(2000, 3, generator=torch.Generator().manual_seed(1)) * 2.5
    box = quadrature(energy, 2, 1, x_std, model_xz, n_points=40, margin=0.3)
    assert box["edge_mass"] < 1e-6
    got = data_nll(energy, x_std, 1, box, std.log().sum())
    # The model's density in data units: x = mean + std * x_std is N(mean, D Sigma_xx D), D = diag(std).
    d = torch.diag(std.double())
    x = mean.double() + std.double() * x_std.double()
    expected = -torch.distributions.MultivariateNormal(mean.double(), d @ cov_std @ d).log_prob(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    # Without the Jacobian every value would be off by sum_d log sigma_d = log 2, far beyond that tolerance.
    assert float((got - (expected - std.log().sum())).abs().min()) > 0.5


def test_elbo_of_a_gaussian_q_on_a_linear_gaussian_model_matches_its_closed_form():
    # One particle mu_i and one bandwidth s: q_i = N(mu_i, s^2 I). E is quadratic in z with Hessian
    # H = I + W^T W / sigma^2, so E_q[E(x_i, z)] = E(x_i, mu_i) + s^2 tr(H) / 2 exactly, the entropy is
    # H(q_i) = (dz / 2) log(2 pi e s^2) and ELBO_i = -E(x_i, mu_i) - s^2 tr(H) / 2 + H(q_i) - log Z. The estimate's
    # standard error is elbo_std_err.
    generator = torch.Generator().manual_seed(6)
    x, _, posterior_mean, _ = _linear_gaussian_problem(64, generator)
    s = 0.3
    result = elbo(linear_gaussian_energy, x, posterior_mean.unsqueeze(1), LOG_Z_LINEAR, n_samples=64,
                  generator=generator, bandwidths=torch.tensor([s], dtype=torch.float64))
    hessian_trace = DZ + float((LOADING**2).sum()) / NOISE_SD**2
    entropy = 0.5 * DZ * math.log(2 * math.pi * math.e * s**2)
    exact = -linear_gaussian_energy(x, posterior_mean) - 0.5 * s**2 * hessian_trace + entropy - LOG_Z_LINEAR
    se = float(result.elbo_std_err.pow(2).sum().sqrt()) / len(x)
    assert abs(float((result.elbo - exact).mean())) < 4 * se
    assert abs(float((result.elbo - exact + entropy).mean())) > 4 * se  # the same without H(q) is rejected
