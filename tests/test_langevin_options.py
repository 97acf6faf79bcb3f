"""The kernel's options against answers computed here: per-particle gradient clipping move by move, MALA with
clipping and with step-size annealing against the exact target, spectral norm through cached weights against
uncached weights.

Stationary-law test. MALA is built to leave exp(-U) exactly invariant for any step size and any drift (a clipped
gradient is just another proposal, as long as the acceptance ratio uses the same one), so chains started *at* the
target must still be at the target after any number of steps: with n independent chains the sample variance of a
coordinate of variance v has standard error v sqrt(2 / n), and 5 of them are allowed. The unadjusted kernel with
the same settings is biased, and the same test must see it (the test's power, checked alongside).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.utils import parametrize

from lvebm_lightning.energies import MLPEnergy, on_pairs
from lvebm_lightning.langevin import LangevinConfig, langevin

N_CHAINS = 20000
PRECISIONS = torch.tensor([1.0, 25.0])  # sd 1 and 0.2: the steep coordinate's gradients reach ~25 x 0.6 = 15


def quadratic(y: torch.Tensor) -> torch.Tensor:
    return 0.5 * (PRECISIONS * y**2).sum(-1)


def test_gradient_clipping_is_exact_particle_by_particle():
    # U(y) = s |y|^2 / 2 has grad s y: particles at radius r have |grad| = s r, so with s = 10, clip 1 those with
    # r < 0.1 are not clipped and the others are rescaled to norm exactly 1.
    s, h, clip = 10.0, 0.01, 1.0
    radii = torch.tensor([0.01, 0.05, 0.099, 0.101, 0.5, 3.0]).repeat_interleave(4)
    directions = torch.nn.functional.normalize(torch.randn(len(radii), 3, generator=torch.Generator().manual_seed(0)))
    y0 = radii.unsqueeze(-1) * directions
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(y0.shape, generator=torch.Generator().manual_seed(1))  # the kernel's first draw
    config = LangevinConfig(h, 1, grad_clip=clip, kernel="ula")
    y, _ = langevin(lambda v: 0.5 * s * (v**2).sum(-1), y0, config, generator)
    grad = s * y0
    norm = grad.norm(dim=-1, keepdim=True)
    clipped = torch.where(norm > clip, grad * clip / norm, grad)
    torch.testing.assert_close(y, y0 - h * clipped + math.sqrt(2 * h) * noise, rtol=0, atol=1e-6)
    # The clipped particles moved by a drift of norm h exactly, the others by h s r.
    drift = (y0 + math.sqrt(2 * h) * noise - y).norm(dim=-1)
    torch.testing.assert_close(drift, h * torch.clamp(s * radii, max=clip), rtol=1e-4, atol=1e-7)


def _stationary_variances(config: LangevinConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Chains started at the exact target N(0, diag(1 / PRECISIONS)) and moved by ``config``: their sample
    variances, and 5 standard errors."""
    generator = torch.Generator().manual_seed(seed)
    variances = 1.0 / PRECISIONS
    y0 = torch.randn(N_CHAINS, 2, generator=generator) * variances.sqrt()
    y, acceptance = langevin(quadratic, y0, config, generator)
    if config.metropolis:
        assert 0.2 < float(acceptance) < 1.0  # the chains really move
    return y.var(0), 5 * variances * math.sqrt(2.0 / N_CHAINS)


@pytest.mark.parametrize(
    "options",
    [{"grad_clip": 1.0}, {"final_step_size": 0.005}, {"grad_clip": 1.0, "final_step_size": 0.005}],
    ids=["clipped", "annealed", "clipped_and_annealed"],
)
def test_mala_with_clipping_or_annealing_keeps_the_target_exactly(options, one_thread):
    mala, tol = _stationary_variances(LangevinConfig(0.06, 40, kernel="mala", **options), seed=2)
    assert torch.all((mala - 1.0 / PRECISIONS).abs() < tol), (mala, tol)
    # The test's power: without the Metropolis correction the same moves drift off the target.
    ula, tol = _stationary_variances(LangevinConfig(0.06, 40, kernel="ula", **options), seed=2)
    assert bool(((ula - 1.0 / PRECISIONS).abs() > tol).any()), (ula, tol)


def _energy_and_particle_grad(energy: MLPEnergy, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x, z = x.clone().requires_grad_(True), z.clone().requires_grad_(True)
    e = energy(x, z)
    return (e.detach(), *torch.autograd.grad(e.sum(), (x, z)))


def test_spectral_norm_through_cached_weights_equals_uncached():
    torch.manual_seed(0)
    energy = MLPEnergy(dx=2, dz=1, width=16, depth=2, spectral_norm=True, gamma=0.1)
    x, z = torch.randn(64, 2), torch.randn(64, 1)
    with torch.no_grad():  # converge the power iteration, then freeze it (eval mode: no more updates)
        for _ in range(50):
            energy(x, z)
    energy.eval()
    uncached = _energy_and_particle_grad(energy, x, z)
    with parametrize.cached():
        first = _energy_and_particle_grad(energy, x, z)
        again = _energy_and_particle_grad(energy, x, z)  # served from the cache
    for a, b, c in zip(uncached, first, again, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(c, a, rtol=1e-6, atol=1e-6)
    # A parameter update between two cached loops is seen by the second (no stale weights across loops).
    with torch.no_grad():
        energy.net[0].parametrizations.weight.original.mul_(1.5)
        energy.net[-1].bias.add_(0.3)
    updated = _energy_and_particle_grad(energy, x, z)
    assert not torch.allclose(updated[0], uncached[0])
    with parametrize.cached():
        cached_updated = _energy_and_particle_grad(energy, x, z)
    for a, b in zip(updated, cached_updated, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)


def test_a_langevin_chain_through_cached_spectral_norm_equals_the_uncached_chain():
    torch.manual_seed(1)
    energy = MLPEnergy(dx=2, dz=1, width=16, depth=2, spectral_norm=True, gamma=0.1).eval()
    y0 = torch.randn(256, 3)
    config = LangevinConfig(0.02, 20, kernel="mala")
    joint = on_pairs(energy, 2)
    plain, acc_plain = langevin(joint, y0, config, torch.Generator().manual_seed(2))
    with parametrize.cached():
        cached, acc_cached = langevin(joint, y0, config, torch.Generator().manual_seed(2))
    torch.testing.assert_close(cached, plain, rtol=1e-5, atol=1e-6)
    assert float(acc_cached) == pytest.approx(float(acc_plain), abs=1e-3)
