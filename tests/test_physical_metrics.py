"""The physical comparisons (``metrics.physical``) against answers known in closed form."""

from __future__ import annotations

import math

import torch

from lvebm_lightning.data.systems import two_point
from lvebm_lightning.metrics.physical import (
    covariance_error,
    free_energy_spread,
    histogram_tv,
    tv_floor,
    two_point_z,
)


def test_free_energy_spread_ignores_the_constant_and_measures_the_noise() -> None:
    gen = torch.Generator().manual_seed(0)
    log_true = torch.randn(4000, generator=gen, dtype=torch.float64)
    assert float(free_energy_spread(log_true + 7.3, log_true)) < 1e-12
    noise = 0.2 * torch.randn(4000, generator=gen, dtype=torch.float64)
    # the sample sd of n normal draws has relative sd 1 / sqrt(2 (n - 1)): 1.1% here, 4 sigma is 4.5%
    assert abs(float(free_energy_spread(log_true + noise, log_true)) - 0.2) < 0.2 * 4 / math.sqrt(2 * 3999)


def test_histogram_tv_of_equal_disjoint_and_shifted_samples() -> None:
    a = torch.linspace(-1, 1, 1000)
    assert float(histogram_tv(a, a.clone(), -3, 3)) == 0.0
    assert abs(float(histogram_tv(a - 2, a + 2, -3, 3)) - 1.0) < 1e-12
    # uniform on [-1, 1] against uniform on [0, 2]: TV = 1/2 exactly, on bins aligned with 0 and 1
    assert abs(float(histogram_tv(a, a + 1, -3, 3, bins=30)) - 0.5) < 0.01


def test_tv_floor_falls_as_one_over_root_n() -> None:
    gen = torch.Generator().manual_seed(1)
    small = [torch.randn(500, generator=gen) for _ in range(2)]
    large = [torch.randn(8000, generator=gen) for _ in range(2)]
    ratio = float(tv_floor(*large, -3, 3) / tv_floor(*small, -3, 3))
    assert 0.25 * 0.8 < ratio < 0.25 * 1.2  # sqrt(500 / 8000) = 1/4


def test_two_point_z_accepts_the_same_law_and_rejects_another_correlation() -> None:
    gen = torch.Generator().manual_seed(2)

    def fields(n: int, coupling: float) -> torch.Tensor:
        white = torch.randn(n, 8, 8, generator=gen, dtype=torch.float64)
        smooth = white + coupling * (white.roll(1, 1) + white.roll(1, 2))
        return smooth.reshape(n, 64)

    z_same, diff = two_point_z(fields(3000, 0.5), fields(3000, 0.5))
    assert diff.shape == (5,)
    assert float(z_same) < 4.0  # the max of 5 |N(0, 1)| stays below 4 with probability > 0.999
    z_other, _ = two_point_z(fields(3000, 0.5), fields(3000, 0.3))
    assert float(z_other) > 10.0
    x = fields(100, 0.5)
    _, diff = two_point_z(x, torch.zeros_like(x))
    assert torch.allclose(diff, two_point(x))  # G of a zero field is 0: the difference is G itself


def test_covariance_error_is_zero_at_the_target_and_scales_with_the_error() -> None:
    gen = torch.Generator().manual_seed(3)
    cov = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=torch.float64)
    white = torch.randn(5000, 2, generator=gen, dtype=torch.float64)
    white = white - white.mean(0)
    whitened = white @ torch.linalg.cholesky(torch.cov(white.T)).inverse().T  # sample covariance exactly I
    exact = whitened @ torch.linalg.cholesky(cov).T
    assert float(covariance_error(exact, cov)) < 1e-10
    assert abs(float(covariance_error(1.1 * exact, cov)) - 0.21) < 1e-10  # (1.1^2 - 1) |C| / |C|
