"""Annealed importance sampling (AIS) estimate of log Z of the joint energy, for dx + dz too large for a grid.

Write y = (x, z) in R^d, d = dx + dz. The path of unnormalised densities between the base
p_0 = N(0, sigma0^2 I) (normalised, Z_0 = 1) and the model's exp(-E) is geometric:

    log gamma_t(y) = (1 - beta_t) log p_0(y) - beta_t E(y),      0 = beta_0 < beta_1 < ... < beta_T = 1.

Each of `n_chains` chains starts at y_0 ~ p_0 and, for t = 1..T, adds to its log weight

    log w += (beta_t - beta_{t-1}) (-E(y) - log p_0(y))

then moves y with `n_mala_steps` Metropolis-adjusted Langevin (MALA) steps of the shared kernel (``langevin.steps``;
the run's own kernel where another is named) on U_t = -log gamma_t, which leave gamma_t invariant. The invariance
is what makes E[w] = Z exactly (Neal, 2001) for step sizes fixed in advance; an unadjusted Langevin step would bias it.

Step sizes. With `adapt_step_size`, a pilot run of separate chains (a quarter of `n_chains`, at least 16),
whose weights are discarded, adapts h move by move towards MALA's optimal acceptance 0.574; the estimate is
then computed by fresh chains with that schedule frozen. Their h never depends on their own moves, so the
estimator stays exactly unbiased given the pilot's schedule.

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

from lvebm_lightning.energies.base import Energy
from lvebm_lightning.langevin import energy_and_grad
from lvebm_lightning.langevin.steps import STEPS, ChainState

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


def _tempered(e: Tensor, grad_e: Tensor, v: Tensor, beta: float, sigma0: float) -> tuple[Tensor, Tensor]:
    """U_t(v) = beta E(v) + (1 - beta) |v|^2 / (2 sigma0^2) = -log gamma_t(v) + const [C], and grad U_t [C, d]."""
    return beta * e + (1 - beta) * 0.5 * (v * v).sum(-1) / sigma0**2, beta * grad_e + (1 - beta) * v / sigma0**2


def _anneal(
    energy: Energy, y: Tensor, dx: int, betas: Tensor, sigma0: float, n_mala_steps: int,
    step_sizes: list[Tensor] | None, step_size: float, generator: torch.Generator | None, kernel: str,
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Run chains from y [C, d] ~ p_0 along the path; return their log weights [C] (float64), the sum of per-move
    acceptance rates, and the step size of every move: ``step_sizes`` when given (frozen), else adapted."""
    log_base_norm = -0.5 * y.shape[-1] * math.log(2 * math.pi * sigma0**2)
    log_weights = torch.zeros(y.shape[0], dtype=torch.float64, device=y.device)
    accept_sum = torch.zeros((), dtype=y.dtype, device=y.device)
    h = torch.tensor(step_size, dtype=y.dtype, device=y.device)
    used: list[Tensor] = []

    def joint(v: Tensor) -> Tensor:
        return energy(v[:, :dx], v[:, dx:])

    for t in range(1, len(betas)):
        e, grad_e = energy_and_grad(joint, y)
        log_base = -0.5 * _sq_norm(y) / sigma0**2 + log_base_norm
        log_weights += (betas[t] - betas[t - 1]) * (-e.to(torch.float64) - log_base)
        if t == len(betas) - 1:
            break
        beta = float(betas[t])

        def tempered(v: Tensor, beta: float = beta) -> tuple[Tensor, Tensor]:
            return _tempered(*energy_and_grad(joint, v), v, beta, sigma0)

        step = STEPS[kernel]
        kept = _tempered(e, grad_e, y, beta, sigma0) if step.adjusted else (None, None)
        state = ChainState(y, *kept, accept_sum)
        for _ in range(n_mala_steps):
            if step_sizes is not None:
                h = step_sizes[len(used)]
            noise, uniform = step.draw(y, generator)
            before = state.accept_sum
            state = step.update(tempered, state, h, noise, uniform, None)
            used.append(h)
            if step_sizes is None:
                h = h * torch.exp(state.accept_sum - before - _TARGET_ACCEPTANCE)
        y, accept_sum = state.y, state.accept_sum
    return log_weights, accept_sum, used


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
    kernel: str = "mala",
) -> AisResult:
    """AIS estimate of log Z = log int exp(-E(x, z)) dx dz from the base N(0, sigma0^2 I) (module docstring).

    Chains live on the device of `generator` (CPU if None) in `dtype`; weights are kept in float64. Every
    transition is `n_mala_steps` MALA steps with step size h on U_t = -log gamma_t:

        y' = y - h grad U_t(y) + sqrt(2 h) xi,   accepted with prob min(1, gamma_t(y') q(y | y') /
                                                                         (gamma_t(y) q(y' | y))).

    With `adapt_step_size`, a pilot run of max(16, n_chains // 4) separate chains multiplies h after each move
    by exp(acc - 0.574), acc that move's acceptance rate over the pilot chains; the n_chains chains of the
    estimate then use the pilot's h move by move, frozen (module docstring: exact unbiasedness). Without it,
    h = `step_size` throughout. Costs (n_chains + pilot) (T + (T - 1) n_mala_steps) energy-and-gradient
    evaluations: one at each temperature's start (E for the weight, grad E for the first move) and one per move.

    ``kernel`` names the step function of the moves (``langevin.steps.STEPS``; the run's own kernel is passed by the
    metrics callback). An unadjusted one (``ula``) leaves gamma_t invariant only up to O(h), which biases the
    estimate, and has no acceptance rate to adapt h by: h then stays at ``step_size``.
    """
    dim = dx + dz
    device = generator.device if generator is not None else torch.device("cpu")
    betas = annealing_schedule(n_temperatures, schedule).to(device)
    schedule_h = None
    if adapt_step_size and STEPS[kernel].adjusted:
        pilot = sigma0 * torch.randn(max(16, n_chains // 4), dim, generator=generator, device=device, dtype=dtype)
        _, _, schedule_h = _anneal(energy, pilot, dx, betas, sigma0, n_mala_steps, None, step_size, generator, kernel)
    y = sigma0 * torch.randn(n_chains, dim, generator=generator, device=device, dtype=dtype)
    log_weights, accept_sum, _ = _anneal(
        energy, y, dx, betas, sigma0, n_mala_steps, schedule_h, step_size, generator, kernel
    )

    log_z = log_weights.logsumexp(0) - math.log(n_chains)
    ess = float((2 * log_weights.logsumexp(0) - (2 * log_weights).logsumexp(0)).exp())
    n_moves = max(1, (n_temperatures - 1) * n_mala_steps)
    return AisResult(
        log_z=float(log_z),
        log_z_std_err=math.sqrt(max(1.0 / ess - 1.0 / n_chains, 0.0)),
        ess=ess,
        log_weights=log_weights,
        acceptance=float(accept_sum) / n_moves,
    )
