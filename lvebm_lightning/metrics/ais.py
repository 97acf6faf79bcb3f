"""Annealed importance sampling (AIS) estimate of log Z of the joint energy, for dx + dz too large for a grid.

Write y = (x, z) in R^d, d = dx + dz. The path of unnormalised densities between the base
p_0 = N(0, sigma0^2 I) (normalised, Z_0 = 1) and the model's exp(-E) is geometric:

    log gamma_t(y) = (1 - beta_t) log p_0(y) - beta_t E(y),      0 = beta_0 < beta_1 < ... < beta_T = 1.

Each of `n_chains` chains starts at y_0 ~ p_0 and, for t = 1..T, adds to its log weight

    log w += (beta_t - beta_{t-1}) (-E(y) - log p_0(y))

then moves y with `n_mala_steps` Metropolis-adjusted Langevin (MALA) steps that leave gamma_t invariant.
The invariance is what makes E[w] = Z exactly (Neal, 2001); an unadjusted Langevin step would bias it.

    log Z_hat = log (1/C) sum_c w_c,    ESS = (sum_c w_c)^2 / sum_c w_c^2.

Bias: Z_hat is unbiased for Z, so by Jensen E[log Z_hat] <= log Z; log Z is underestimated on average, and
an ELBO (or log-likelihood) that subtracts an AIS log Z is biased *upward*. The gap shrinks with more
temperatures, better transitions and more chains; `log_z_std_err` (delta method) is the Monte-Carlo
spread, not this bias, and is itself unreliable when the ESS is small.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from lvebm_lightning.energy import Energy

# Acceptance rate at which MALA's efficiency peaks in high dimension (Roberts & Rosenthal, 1998).
_TARGET_ACCEPTANCE = 0.574


@dataclass
class AisResult:
    """log Z_hat, its delta-method standard error sqrt(1/ESS - 1/C), the ESS, the chains' log weights
    [n_chains] (float64), and the mean MALA acceptance rate over all temperatures."""

    log_z: float
    log_z_std_err: float
    ess: float
    log_weights: Tensor
    acceptance: float


def annealing_schedule(
    n_temperatures: int, kind: Literal["linear", "sigmoid"] = "sigmoid", sharpness: float = 4.0
) -> Tensor:
    """Inverse temperatures beta_0 = 0 < ... < beta_T = 1 ([T + 1] float64), T = `n_temperatures`.

    linear: beta_t = t / T. sigmoid (Grosse et al., 2013): beta~_t = sigmoid(sharpness (2 t / T - 1)),
    rescaled to [0, 1]; it spends more temperatures near both ends, where the path changes fastest.
    """
    if n_temperatures < 1:
        raise ValueError(f"n_temperatures must be >= 1, got {n_temperatures}")
    fraction = torch.linspace(0.0, 1.0, n_temperatures + 1, dtype=torch.float64)
    if kind == "linear":
        return fraction
    if kind == "sigmoid":
        curve = torch.sigmoid(sharpness * (2.0 * fraction - 1.0))
        return (curve - curve[0]) / (curve[-1] - curve[0])
    raise ValueError(f"schedule must be 'linear' or 'sigmoid', got {kind!r}")


def _sq_norm(v: Tensor) -> Tensor:
    """|v_c|^2 per row of v [C, d], in float64."""
    return v.to(torch.float64).pow(2).sum(dim=-1)


def _neg_energy_and_grad(energy: Energy, y: Tensor, dx: int) -> tuple[Tensor, Tensor]:
    """-E(y) [C] in float64 and its gradient in y [C, d]; no parameter gradients are built."""
    with torch.enable_grad():
        y = y.detach().requires_grad_(True)
        neg_energy = -energy(y[:, :dx], y[:, dx:])
        (grad,) = torch.autograd.grad(neg_energy.sum(), y)
    return neg_energy.detach().to(torch.float64), grad.detach()


def ais_log_partition(
    energy: Energy,
    dx: int,
    dz: int,
    n_chains: int = 1000,
    n_temperatures: int = 200,
    sigma0: float = 1.0,
    n_mala_steps: int = 2,
    step_size: float = 0.1,
    schedule: Literal["linear", "sigmoid"] = "sigmoid",
    adapt_step_size: bool = True,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> AisResult:
    """AIS estimate of log Z = log int exp(-E(x, z)) dx dz from the base N(0, sigma0^2 I) (module docstring).

    Chains live on the device of `generator` (CPU if None) in `dtype`; weights are kept in float64. Every
    transition is `n_mala_steps` MALA steps with step size h:

        y' = y + h grad log gamma_t(y) + sqrt(2 h) xi,   accepted with prob min(1, gamma_t(y') q(y | y') /
                                                                                (gamma_t(y) q(y' | y))).

    With `adapt_step_size`, h is multiplied after each MALA step by exp(acc - 0.574), acc that step's
    acceptance rate over all chains, so h follows the scale of the path. Each transition still leaves its
    gamma_t invariant for the h it uses; h depends on any single chain only through an average over n_chains.
    Costs n_chains (1 + (T - 1) n_mala_steps) energy-and-gradient evaluations.
    """
    dim = dx + dz
    device = generator.device if generator is not None else torch.device("cpu")
    betas = annealing_schedule(n_temperatures, schedule).to(device)
    log_base_norm = -0.5 * dim * math.log(2 * math.pi * sigma0**2)

    def log_base(y: Tensor) -> Tensor:
        return -0.5 * _sq_norm(y) / sigma0**2 + log_base_norm

    def log_target(neg_energy: Tensor, y: Tensor, beta: Tensor) -> Tensor:
        return (1 - beta) * log_base(y) + beta * neg_energy

    def grad_log_target(grad_neg_energy: Tensor, y: Tensor, beta: Tensor) -> Tensor:
        return (1 - beta).to(y.dtype) * (-y / sigma0**2) + beta.to(y.dtype) * grad_neg_energy

    y = sigma0 * torch.randn(n_chains, dim, generator=generator, device=device, dtype=dtype)
    neg_energy, grad_neg_energy = _neg_energy_and_grad(energy, y, dx)
    log_weights = torch.zeros(n_chains, dtype=torch.float64, device=device)
    h = torch.tensor(step_size, dtype=torch.float64, device=device)
    acceptance_sum = torch.zeros((), dtype=torch.float64, device=device)
    for t in range(1, n_temperatures + 1):
        beta = betas[t]
        log_weights += (beta - betas[t - 1]) * (neg_energy - log_base(y))
        if t == n_temperatures:
            break
        for _ in range(n_mala_steps):
            drift = grad_log_target(grad_neg_energy, y, beta)
            noise = torch.randn(y.shape, generator=generator, device=device, dtype=dtype)
            proposal = y + h.to(dtype) * drift + (2 * h).sqrt().to(dtype) * noise
            prop_neg_energy, prop_grad = _neg_energy_and_grad(energy, proposal, dx)
            prop_drift = grad_log_target(prop_grad, proposal, beta)
            log_forward = -_sq_norm(proposal - y - h.to(dtype) * drift) / (4 * h)
            log_backward = -_sq_norm(y - proposal - h.to(dtype) * prop_drift) / (4 * h)
            log_ratio = (
                log_target(prop_neg_energy, proposal, beta)
                - log_target(neg_energy, y, beta)
                + log_backward
                - log_forward
            )
            uniform = torch.rand(n_chains, generator=generator, device=device, dtype=torch.float64)
            accept = uniform.log() < log_ratio
            y = torch.where(accept.unsqueeze(-1), proposal, y)
            neg_energy = torch.where(accept, prop_neg_energy, neg_energy)
            grad_neg_energy = torch.where(accept.unsqueeze(-1), prop_grad, grad_neg_energy)
            rate = accept.to(torch.float64).mean()
            acceptance_sum += rate
            if adapt_step_size:
                h = h * torch.exp(rate - _TARGET_ACCEPTANCE)

    log_z = log_weights.logsumexp(0) - math.log(n_chains)
    ess = float((2 * log_weights.logsumexp(0) - (2 * log_weights).logsumexp(0)).exp())
    n_moves = max(1, (n_temperatures - 1) * n_mala_steps)
    return AisResult(
        log_z=float(log_z),
        log_z_std_err=math.sqrt(max(1.0 / ess - 1.0 / n_chains, 0.0)),
        ess=ess,
        log_weights=log_weights,
        acceptance=float(acceptance_sum) / n_moves,
    )
