"""Comparisons of a model with a physical system: free energies, histograms, correlation functions, covariances.

- ``free_energy_spread``: the standard deviation over data of log p_model(x) - log p_true(x). Both densities
  need only be known up to a constant (it cancels in the spread), so for a Boltzmann system U(x) in kT and the
  model's unnormalised log marginal suffice; 0 means the learned free-energy surface equals the physical one up
  to a constant, and the value is in kT.
- ``histogram_tv``: the total-variation distance between the histograms of two samples on common bins, with
  ``tv_floor``: its expected value for two independent samples of the same sizes from the same law (computed
  from the pooled histogram by simulation), the level below which a TV says nothing.
- ``two_point_z``: the largest |G_model(r) - G_data(r)| over distances r in units of its standard error.
- ``covariance_error``: the relative Frobenius error of a sample covariance against a target covariance.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def free_energy_spread(log_p_model: Tensor, log_p_true: Tensor) -> Tensor:
    """std over data of log p_model(x_b) - log p_true(x_b), both ``[B]`` and known up to constants (kT)."""
    if log_p_model.shape != log_p_true.shape or log_p_model.ndim != 1 or len(log_p_model) < 2:
        raise ValueError(f"need two [B >= 2] tensors, got {tuple(log_p_model.shape)} and {tuple(log_p_true.shape)}")
    return (log_p_model.double() - log_p_true.double()).std()


def histogram_tv(a: Tensor, b: Tensor, lo: float, hi: float, bins: int = 30) -> Tensor:
    """TV = (1/2) sum_j |P_a(j) - P_b(j)| of the histograms of 1-D samples a, b on ``bins`` equal bins of
    [lo, hi] (values outside are counted in the end bins)."""
    def histogram(v: Tensor) -> Tensor:
        counts = torch.histc(v.double().clamp(lo, hi), bins=bins, min=lo, max=hi)
        return counts / counts.sum()

    return 0.5 * (histogram(a) - histogram(b)).abs().sum()


def tv_floor(a: Tensor, b: Tensor, lo: float, hi: float, bins: int = 30, repeats: int = 200, seed: int = 0) -> Tensor:
    """The mean TV (``histogram_tv``) between two independent samples of sizes len(a) and len(b) drawn from the
    pooled sample of a and b: the TV that sampling noise alone gives."""
    pooled = torch.cat([a, b]).double()
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(repeats):
        draw = pooled[torch.randint(len(pooled), (len(a) + len(b),), generator=gen)]
        values.append(histogram_tv(draw[: len(a)], draw[len(a) :], lo, hi, bins))
    return torch.stack(values).mean()


def _per_config_products(phi: Tensor) -> Tensor:
    """mean over sites and both axes of phi_x phi_{x + r mu}, per configuration: ``[B, V] -> [B, side // 2 + 1]``."""
    side = math.isqrt(phi.shape[-1])
    field = phi.double().reshape(-1, side, side)
    return torch.stack(
        [(field * (field.roll(r, 1) + field.roll(r, 2))).mean((1, 2)) / 2.0 for r in range(side // 2 + 1)], dim=1
    )


def two_point_z(model: Tensor, data: Tensor) -> tuple[Tensor, Tensor]:
    """(max over r of |G_model(r) - G_data(r)| / se(r), the differences ``[side // 2 + 1]``) for lattice fields
    ``[B, V]``. G is the connected two-point function (``data.systems.two_point``); se(r) combines the standard
    errors of the per-configuration products of both samples (configurations taken as independent draws)."""
    pm, pd = _per_config_products(model), _per_config_products(data)
    gm = pm.mean(0) - model.double().mean() ** 2
    gd = pd.mean(0) - data.double().mean() ** 2
    se = (pm.var(0) / len(pm) + pd.var(0) / len(pd)).sqrt()
    diff = gm - gd
    return (diff.abs() / se.clamp_min(1e-300)).max(), diff


def covariance_error(samples: Tensor, cov: Tensor) -> Tensor:
    """|Cov(samples) - cov|_F / |cov|_F for samples ``[n, d]`` and a target covariance ``[d, d]``."""
    sample_cov = torch.cov(samples.double().T)
    cov = cov.double()
    return torch.linalg.matrix_norm(sample_cov - cov) / torch.linalg.matrix_norm(cov)
