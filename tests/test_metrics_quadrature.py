"""Quadrature log Z and log p(x) against a Gaussian energy whose answers are closed-form.

E(x, z) = 0.5 y^T P y with y = (x, z), dx = 2, dz = 1: log Z = (3/2) log 2 pi - (1/2) log det P, and
p(x) = N(x; 0, Sigma_xx) with Sigma = P^-1. The midpoint rule on a smooth density that is ~0 at the box edge
converges geometrically; on +-8 marginal standard deviations with 40 cells a side it is at ~1e-12, so the
1e-4 tolerance only has to absorb float32 rounding in the float32 check.
"""

import math

import pytest
import torch

from lvebm_lightning.metrics import choose_box, log_marginal, log_partition, make_grid

PRECISION = torch.tensor([[1.0, 0.3, 0.2], [0.3, 2.0, -0.4], [0.2, -0.4, 1.5]], dtype=torch.float64)
COVARIANCE = torch.linalg.inv(PRECISION)
MARGINAL_SD = COVARIANCE.diag().sqrt()
LOG_Z = 1.5 * math.log(2 * math.pi) - 0.5 * float(torch.logdet(PRECISION))


def gaussian_energy(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    y = torch.cat([x, z], dim=-1)
    return 0.5 * ((y @ PRECISION.to(y)) * y).sum(dim=-1)


def test_make_grid_gives_cell_midpoints_and_volume() -> None:
    points, log_cell = make_grid(torch.tensor([0.0, -1.0]), torch.tensor([1.0, 1.0]), 2)
    expected = torch.tensor([[0.25, -0.5], [0.25, 0.5], [0.75, -0.5], [0.75, 0.5]])
    torch.testing.assert_close(points, expected)
    assert log_cell == pytest.approx(math.log(0.5 * 1.0))
    empty_points, empty_log_cell = make_grid(torch.empty(0), torch.empty(0), 7)
    assert empty_points.shape == (1, 0) and empty_log_cell == 0.0


def test_log_partition_matches_the_gaussian_normaliser() -> None:
    result = log_partition(gaussian_energy, 2, 1, -8 * MARGINAL_SD, 8 * MARGINAL_SD, n_per_dim=40)
    assert result.log_z == pytest.approx(LOG_Z, abs=1e-4)
    assert result.edge_mass < 1e-10
    as_float32 = log_partition(gaussian_energy, 2, 1, -8 * MARGINAL_SD.float(), 8 * MARGINAL_SD.float(), 40)
    assert as_float32.log_z == pytest.approx(LOG_Z, abs=1e-4)
    x_only = log_partition(gaussian_energy, 3, 0, -8 * MARGINAL_SD, 8 * MARGINAL_SD, n_per_dim=40)
    assert x_only.log_z == pytest.approx(LOG_Z, abs=1e-4)


def test_log_likelihood_matches_the_gaussian_marginal() -> None:
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.5
    marginal = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), COVARIANCE[:2, :2])
    lo, hi = -8 * MARGINAL_SD, 8 * MARGINAL_SD
    log_z = log_partition(gaussian_energy, 2, 1, lo, hi, n_per_dim=40).log_z
    estimate = log_marginal(gaussian_energy, x, 1, lo[2:], hi[2:], n_per_dim=40) - log_z
    torch.testing.assert_close(estimate, marginal.log_prob(x), atol=1e-4, rtol=0.0)


def test_edge_mass_is_large_when_the_box_cuts_the_density() -> None:
    # On +-0.5 sd the density is nearly flat, so the outer layer (1 - (18/20)^3 = 27% of the cells) holds
    # about that share of the mass.
    result = log_partition(gaussian_energy, 2, 1, -0.5 * MARGINAL_SD, 0.5 * MARGINAL_SD, n_per_dim=20)
    assert result.edge_mass > 0.2


def test_chunking_does_not_change_the_answer() -> None:
    lo, hi = -6 * MARGINAL_SD, 6 * MARGINAL_SD
    whole = log_partition(gaussian_energy, 2, 1, lo, hi, n_per_dim=12)
    chunked = log_partition(gaussian_energy, 2, 1, lo, hi, n_per_dim=12, batch_size=7)
    assert chunked.log_z == pytest.approx(whole.log_z, abs=1e-12)
    assert chunked.edge_mass == pytest.approx(whole.edge_mass, rel=1e-9)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(
        log_marginal(gaussian_energy, x, 1, lo[2:], hi[2:], n_per_dim=30, batch_size=7),
        log_marginal(gaussian_energy, x, 1, lo[2:], hi[2:], n_per_dim=30),
    )


def test_log_marginal_without_latents_is_minus_the_energy() -> None:
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    estimate = log_marginal(gaussian_energy, x, 0, torch.empty(0), torch.empty(0))
    torch.testing.assert_close(estimate, -gaussian_energy(x, x[:, :0]))


def test_choose_box_covers_the_samples_with_a_margin() -> None:
    samples = torch.tensor([[0.0, -1.0], [2.0, 3.0], [1.0, 0.0]])
    lo, hi = choose_box(samples, margin=0.5)
    torch.testing.assert_close(lo, torch.tensor([-1.0, -3.0]))
    torch.testing.assert_close(hi, torch.tensor([3.0, 5.0]))
    with pytest.raises(ValueError, match="zero spread"):
        choose_box(torch.zeros(5, 2))
