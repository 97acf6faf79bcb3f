"""Collapsed sampling for the decoder energy, against closed forms.

- The declared forms themselves: E_z(z) = -log int exp(-E(x, z)) dx and the moments of x | z, by quadrature over x.
- A linear decoder with f = 0 makes p(x, z) Gaussian (probabilistic PCA, tilted by the confinement): its joint
  precision is known exactly, so the collapsed sampler's law of x, the posterior z | x and the conditional
  x_m | x_o are checked against it.
- A non-linear decoder: the collapsed and the joint sampler give the same law of (x, z).

Sample tests use n independent chains and a tolerance of 5 standard errors of the statistic (a mean: sd / sqrt(n);
a variance: v sqrt(2 / n)), so a wrong law whose mean or variance is off by more than that fails.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from lvebm_lightning.energies.base import on_pairs
from lvebm_lightning.energies.decoder import DecoderEnergy
from lvebm_lightning.energies.mlp import MLPEnergy
from lvebm_lightning.langevin import LangevinConfig, langevin
from lvebm_lightning.particles.collapsed import (
    collapsed_conditional,
    collapsed_langevin,
    collapsible,
)

GAMMA, SIGMA = 0.1, 0.4


def _decoder(dx: int, dz: int, seed: int = 0) -> DecoderEnergy:
    torch.manual_seed(seed)
    return DecoderEnergy(dx=dx, dz=dz, width=16, depth=2, sigma=SIGMA, learn_sigma=False, gamma=GAMMA)


class _Zero(nn.Module):
    def forward(self, z: Tensor) -> Tensor:
        return torch.zeros(*z.shape[:-1], 1, dtype=z.dtype)


def _linear_decoder(dx: int, dz: int) -> tuple[DecoderEnergy, Tensor, Tensor]:
    """The decoder energy with g(z) = W z + b and f = 0, and the exact mean ``[dx + dz]`` and covariance of (x, z)."""
    energy = _decoder(dx, dz)
    linear = nn.Linear(dz, dx)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.2, -0.4], [0.3, 0.9], [-0.7, 0.5]])[:dx, :dz])
        linear.bias.copy_(torch.tensor([0.5, -0.3, 0.2])[:dx])
    energy.decoder, energy.prior = linear, _Zero()
    w, b = linear.weight.detach().double(), linear.bias.detach().double()
    inv_var = 1.0 / SIGMA**2
    # E = (1 + gamma)|z|^2 / 2 + |x - W z - b|^2 / (2 sigma^2) + gamma |x|^2 / 2: precision L, linear term h
    precision = torch.zeros(dx + dz, dx + dz, dtype=torch.float64)
    precision[:dx, :dx] = (inv_var + GAMMA) * torch.eye(dx)
    precision[:dx, dx:] = -inv_var * w
    precision[dx:, :dx] = -inv_var * w.T
    precision[dx:, dx:] = (1.0 + GAMMA) * torch.eye(dz) + inv_var * w.T @ w
    h = torch.cat([inv_var * b, -inv_var * w.T @ b])
    cov = torch.linalg.inv(precision)
    return energy, cov @ h, cov


def test_marginal_energy_and_conditional_moments_are_the_integrals_over_x():
    energy = _decoder(dx=2, dz=1)
    z = torch.linspace(-2.5, 2.5, 7).unsqueeze(-1)
    grid = torch.linspace(-8.0, 8.0, 1601)
    dx_cell = float(grid[1] - grid[0])
    x0, x1 = torch.meshgrid(grid, grid, indexing="ij")
    x = torch.stack([x0, x1], -1).reshape(-1, 2)
    with torch.no_grad():
        for zi in z:
            e = energy(x, zi.expand(len(x), 1)).double()
            log_mass = torch.logsumexp(-e, 0) + 2 * math.log(dx_cell)
            assert float(energy.z_energy(zi)) == pytest.approx(-float(log_mass), abs=1e-4)
            weights = torch.softmax(-e, 0).unsqueeze(-1)
            mean, std = energy.x_given_z(zi)
            quad_mean = (weights * x.double()).sum(0)
            quad_var = (weights * (x.double() - quad_mean) ** 2).sum(0)
            assert torch.allclose(mean.double(), quad_mean, atol=1e-4)
            assert torch.allclose(std.double().expand(2) ** 2, quad_var, rtol=1e-3)
            # x_1 observed: only x_0 integrates out
            x_obs = torch.tensor([0.0, 0.7])
            seen = torch.tensor([0.0, 1.0])
            line = torch.stack([grid, torch.full_like(grid, 0.7)], -1)
            partial = -(torch.logsumexp(-energy(line, zi.expand(len(grid), 1)).double(), 0) + math.log(dx_cell))
            assert float(energy.z_energy(zi, x_obs, seen)) == pytest.approx(float(partial), abs=1e-4)


def test_fully_observed_z_energy_is_the_joint_energy():
    energy = _decoder(dx=3, dz=2)
    x, z = torch.randn(5, 3), torch.randn(5, 2)
    assert torch.allclose(energy.z_energy(z, x, torch.ones(3)), energy(x, z), atol=1e-5)
    assert collapsible(energy) and not collapsible(MLPEnergy(2, 1))


N = 4000


def _chains(n_steps: int = 400, h: float = 0.05) -> LangevinConfig:
    return LangevinConfig(step_size=h, n_steps=n_steps, kernel="mala")


def _assert_gaussian(samples: Tensor, mean: Tensor, cov: Tensor) -> None:
    """Sample mean and variance of every coordinate within 5 standard errors of the exact ones."""
    samples = samples.double()
    var = torch.diagonal(cov)
    assert torch.all((samples.mean(0) - mean).abs() < 5 * (var / len(samples)).sqrt()), (samples.mean(0), mean)
    assert torch.all((samples.var(0) / var - 1).abs() < 5 * math.sqrt(2 / len(samples))), (samples.var(0), var)


def test_collapsed_pairs_follow_the_exact_gaussian_of_a_linear_decoder():
    energy, mean, cov = _linear_decoder(dx=3, dz=2)
    generator = torch.Generator().manual_seed(0)
    xz = torch.randn(N, 5, generator=generator)
    with torch.no_grad():
        xz, accept = collapsed_langevin(energy, xz, 3, _chains(), generator)
    assert 0.5 < float(accept) <= 1.0
    _assert_gaussian(xz, mean, cov)


def test_posterior_and_conditional_of_a_linear_decoder_are_exact():
    """z | x (all observed) and x_m | x_o (x_2 missing) against the Gaussian conditionals of the joint law."""
    energy, mean, cov = _linear_decoder(dx=3, dz=2)
    generator = torch.Generator().manual_seed(1)
    x_o = torch.tensor([0.8, -0.2, 0.0])
    seen = torch.tensor([1.0, 1.0, 0.0])
    observed, hidden = [0, 1], [2, 3, 4]  # x_0, x_1 observed; x_2, z_0, z_1 unknown
    s_ho = cov[hidden][:, observed]
    s_oo_inv = torch.linalg.inv(cov[observed][:, observed])
    cond_mean = mean[hidden] + s_ho @ s_oo_inv @ (x_o[observed].double() - mean[observed])
    cond_cov = cov[hidden][:, hidden] - s_ho @ s_oo_inv @ s_ho.T
    z = torch.randn(1, N, 2, generator=generator)
    x_full, z = collapsed_conditional(energy, x_o.unsqueeze(0), seen.unsqueeze(0), z, _chains(), generator)
    assert torch.equal(x_full[0, :, :2], x_o[:2].expand(N, 2))  # the observed coordinates are kept
    _assert_gaussian(torch.cat([x_full[0, :, 2:], z[0]], -1), cond_mean, cond_cov)


@pytest.mark.slow
def test_collapsed_and_joint_samplers_give_the_same_law_for_a_nonlinear_decoder():
    """Same law of (x, z): each coordinate's mean and variance agree within 5 standard errors of their difference
    (two independent samples of n = 4000: a mean shift above 0.16 sd, or a variance off by more than 16%, fails)."""
    energy = _decoder(dx=2, dz=1, seed=3)
    generator = torch.Generator().manual_seed(2)
    start = torch.randn(N, 3, generator=generator)
    with torch.no_grad():
        collapsed, _ = collapsed_langevin(energy, start, 2, _chains(), generator)
        joint, accept = langevin(on_pairs(energy, 2), start, _chains(n_steps=3000, h=0.02), generator)
    assert float(accept) > 0.5
    a, b = collapsed.double(), joint.double()
    se_mean = ((a.var(0) + b.var(0)) / N).sqrt()
    assert torch.all((a.mean(0) - b.mean(0)).abs() < 5 * se_mean), (a.mean(0), b.mean(0))
    assert torch.all((a.var(0) / b.var(0)).log().abs() < 5 * math.sqrt(4 / N)), (a.var(0), b.var(0))


@pytest.mark.parametrize(("overrides", "expected"), [
    (("model/energy=decoder",), True),
    (("model/energy=decoder", "sampler.collapsed=false"), False),
    ((), False),  # the MLP energy declares no closed form
])
def test_the_module_collapses_where_the_energy_allows_and_the_config_asks(make_cfg, overrides, expected):
    from hydra.utils import instantiate

    from lvebm_lightning.training.run import build_model

    cfg = make_cfg(*overrides)
    model = build_model(cfg, instantiate(cfg.data).prepare())
    assert model.collapsed is expected
    xz = torch.randn(64, model.dx + model.dz)
    moved, _ = model.move_pairs(xz, LangevinConfig(0.01, 2), torch.Generator().manual_seed(0))
    # the collapsed move redraws x | z from scratch; the joint move keeps x near where it was
    assert bool(torch.corrcoef(torch.stack([moved[:, 0], xz[:, 0]]))[0, 1] < 0.5) is expected


def test_reconstruction_takes_the_collapsed_chain_where_asked():
    """``conditional_sample(collapsed=True)`` on a linear decoder draws the exact conditional x_2 | x_0, x_1; without
    the flag the same call runs the joint chain, whose draws differ (the flag is not ignored)."""
    from lvebm_lightning.inference.reconstruction import conditional_sample

    energy, mean, cov = _linear_decoder(dx=3, dz=2)
    x_o = torch.tensor([[0.8, -0.2, float("nan")]])
    missing = torch.isnan(x_o)
    observed, hidden = [0, 1], [2]
    s_oo_inv = torch.linalg.inv(cov[observed][:, observed])
    s_ho = cov[hidden][:, observed]
    cond_mean = mean[hidden] + s_ho @ s_oo_inv @ (x_o[0, observed].double() - mean[observed])
    cond_cov = cov[hidden][:, hidden] - s_ho @ s_oo_inv @ s_ho.T
    config = _chains(n_steps=300)
    x, _ = conditional_sample(energy, x_o, missing, 2, N, config, torch.Generator().manual_seed(4), collapsed=True)
    _assert_gaussian(x[0, :, 2:], cond_mean, cond_cov)
    x_joint, _ = conditional_sample(energy, x_o, missing, 2, N, config, torch.Generator().manual_seed(4))
    assert not torch.allclose(x_joint[0, :, 2].mean(), x[0, :, 2].mean(), atol=1e-3)
