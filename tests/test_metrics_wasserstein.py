"""W2, sliced W2 and the W2 noise floor against closed forms for Gaussians.

Tolerances. For samples mu_n, nu_n of mu, nu the triangle inequality gives
    |W2(mu_n, nu_n) - W2(mu, nu)| <= W2(mu_n, mu) + W2(nu_n, nu).
The floor W2(mu_n, mu'_n) between two independent n-samples is the same sampling error twice, added in
quadrature to leading order (exactly so for 1-D quantile processes), so W2(mu_n, mu) ~ floor_mu / sqrt(2).
Hence tol = floor_mu + floor_nu bounds the right-hand side with a margin of about sqrt(2).
"""

import math

import pytest
import scipy.linalg
import torch

from lvebm_lightning.metrics import sliced_w2, w2, w2_floor

N = 1000  # 2-D exact OT on 1000 points takes ~0.2 s; the floor is then ~0.2.


def _gaussian(mean: list[float], cov: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(n, len(mean), generator=generator, dtype=torch.float64)
    return torch.tensor(mean, dtype=torch.float64) + noise @ torch.linalg.cholesky(cov).T


def _bures_w2(m1: list[float], c1: torch.Tensor, m2: list[float], c2: torch.Tensor) -> float:
    """W2(N(m1, C1), N(m2, C2))^2 = |m1 - m2|^2 + tr(C1 + C2 - 2 (C2^1/2 C1 C2^1/2)^1/2)."""
    root2 = scipy.linalg.sqrtm(c2.numpy()).real
    cross = scipy.linalg.sqrtm(root2 @ c1.numpy() @ root2).real
    mean_term = float(sum((a - b) ** 2 for a, b in zip(m1, m2)))
    return math.sqrt(mean_term + float(torch.trace(c1 + c2)) - 2 * float(cross.trace()))


def test_w2_of_a_sample_with_itself_is_zero() -> None:
    a = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    assert float(w2(a, a)) == pytest.approx(0.0, abs=1e-12)
    assert float(sliced_w2(a, a)) == pytest.approx(0.0, abs=1e-12)


def test_w2_of_shifted_gaussians_approaches_the_mean_gap() -> None:
    generator = torch.Generator().manual_seed(1)
    identity = torch.eye(2, dtype=torch.float64)
    a = _gaussian([0.0, 0.0], identity, N, generator)
    b = _gaussian([1.5, -0.5], identity, N, generator)
    floor = w2_floor(
        _gaussian([0.0, 0.0], identity, N, generator), _gaussian([0.0, 0.0], identity, N, generator), N
    )
    # Both sides are N(., I), so floor_mu = floor_nu: tol = 2 floor (see the module docstring).
    assert float(w2(a, b)) == pytest.approx(math.hypot(1.5, -0.5), abs=2 * float(floor))


def test_w2_of_gaussians_with_different_scales_matches_the_bures_formula() -> None:
    generator = torch.Generator().manual_seed(2)
    cov_a = torch.diag(torch.tensor([1.0, 0.25], dtype=torch.float64))
    rotation = torch.tensor(
        [[math.cos(0.6), -math.sin(0.6)], [math.sin(0.6), math.cos(0.6)]], dtype=torch.float64
    )
    cov_b = rotation @ torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64)) @ rotation.T
    mean_a, mean_b = [0.0, 0.0], [0.5, 0.0]
    exact = _bures_w2(mean_a, cov_a, mean_b, cov_b)
    floor_a = w2_floor(_gaussian(mean_a, cov_a, N, generator), _gaussian(mean_a, cov_a, N, generator), N)
    floor_b = w2_floor(_gaussian(mean_b, cov_b, N, generator), _gaussian(mean_b, cov_b, N, generator), N)
    estimate = w2(_gaussian(mean_a, cov_a, N, generator), _gaussian(mean_b, cov_b, N, generator))
    assert float(estimate) == pytest.approx(exact, abs=float(floor_a + floor_b))


def test_sliced_w2_is_a_lower_bound_of_w2_on_the_same_samples() -> None:
    # Each projection is 1-Lipschitz, so the optimal plan in R^d projects to a plan of no greater cost:
    # SW2 <= W2 holds exactly for the same samples, up to floating-point error.
    generator = torch.Generator().manual_seed(3)
    cov = torch.eye(3, dtype=torch.float64)
    a, b = (
        _gaussian([0.0, 0.0, 0.0], cov, 400, generator),
        _gaussian([1.0, 0.0, -1.0], 2 * cov, 400, generator),
    )
    assert float(sliced_w2(a, b, n_projections=100, seed=0)) <= float(w2(a, b)) + 1e-9
    assert float(sliced_w2(a, b, seed=4)) == float(sliced_w2(a, b, seed=4))


def test_w2_subsampling_is_reproducible_and_the_floor_checks_its_size() -> None:
    a, b = torch.randn(500, 2), torch.randn(400, 2) + 1.0
    first = w2(a, b, max_samples=100, generator=torch.Generator().manual_seed(5))
    second = w2(a, b, max_samples=100, generator=torch.Generator().manual_seed(5))
    assert float(first) == float(second)
    with pytest.raises(ValueError, match="lower n"):
        w2_floor(a, b, 450)
