"""The overdamped Langevin kernel shared by every particle system.

One step of the Euler-Maruyama discretisation of dY = -grad U(Y) dt + sqrt(2) dW with step size h:

    Y <- Y - h grad U(Y) + sqrt(2 h) xi,        xi ~ N(0, I)

Its stationary law tends to p(y) proportional to exp(-U(y)) as h -> 0 (the bias of the unadjusted kernel is O(h));
with ``metropolis=True`` each move is accepted with the Metropolis-Hastings probability of the Langevin
proposal (MALA), which makes exp(-U) exactly invariant at any h.

The kernel is a plain function of (energy, particles, step size, steps, generator). It never builds parameter
gradients: the gradient is ``torch.autograd.grad(U.sum(), y)`` with respect to the particles only, and the
particles are detached after every step. Shapes are fixed inside the loop, the noise comes from the generator
that is passed in and nothing branches on tensor values, so the loop can be compiled or graph-captured.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

EnergyFn = Callable[[Tensor], Tensor]
"""Maps particles ``[..., d]`` to energies ``[...]``."""


@dataclass(frozen=True)
class LangevinConfig:
    """Settings of one Langevin chain.

    Attributes:
        step_size: h > 0, the Euler-Maruyama step; the noise scale is sqrt(2 h), never set apart from h.
        n_steps: T, the number of steps.
        grad_clip: if set, each particle's gradient is rescaled to at most this Euclidean norm (a guard for
            early training, when energies can be steep; it biases the chain, so leave it None for evaluation).
        metropolis: accept or reject each move with the MALA ratio, so exp(-U) is exactly invariant.
        final_step_size: if set, h is annealed geometrically from ``step_size`` to this value over the chain.
    """

    step_size: float
    n_steps: int
    grad_clip: float | None = None
    metropolis: bool = False
    final_step_size: float | None = None

    def __post_init__(self) -> None:
        if not self.step_size > 0:
            raise ValueError(f"Langevin step_size must be > 0, got {self.step_size}; set a positive step size.")
        if self.n_steps < 0:
            raise ValueError(f"Langevin n_steps must be >= 0, got {self.n_steps}.")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"Langevin grad_clip must be > 0 or null, got {self.grad_clip}.")
        if self.final_step_size is not None and not self.final_step_size > 0:
            raise ValueError(f"Langevin final_step_size must be > 0 or null, got {self.final_step_size}.")

    def step_sizes(self) -> list[float]:
        """The step size of every step: constant, or geometric from ``step_size`` to ``final_step_size``."""
        if self.final_step_size is None or self.n_steps <= 1:
            return [self.step_size] * self.n_steps
        ratio = (self.final_step_size / self.step_size) ** (1.0 / (self.n_steps - 1))
        return [self.step_size * ratio**t for t in range(self.n_steps)]


def energy_and_grad(energy: EnergyFn, y: Tensor) -> tuple[Tensor, Tensor]:
    """U(y) ``[...]`` and grad_y U(y) ``[..., d]``, with gradients taken with respect to ``y`` only."""
    with torch.enable_grad():
        y = y.detach().requires_grad_(True)
        u = energy(y)
        (grad,) = torch.autograd.grad(u.sum(), y)
    return u.detach(), grad


def _clip_per_particle(grad: Tensor, max_norm: float) -> Tensor:
    norm = grad.norm(dim=-1, keepdim=True)
    return grad * (max_norm / norm.clamp_min(max_norm))


def _log_proposal(y_to: Tensor, y_from: Tensor, grad_from: Tensor, h: float) -> Tensor:
    """log q(y_to | y_from) of the Langevin proposal N(y_from - h grad, 2 h I), up to a constant."""
    return -((y_to - y_from + h * grad_from) ** 2).sum(-1) / (4.0 * h)


def langevin(
    energy: EnergyFn,
    y: Tensor,
    config: LangevinConfig,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Run T steps of overdamped Langevin dynamics on ``energy`` from ``y``.

    Args:
        energy: U, mapping particles ``[..., d]`` to energies ``[...]``.
        y: initial particles ``[..., d]``; not modified.
        config: step size h, number of steps T and optional extras.
        generator: source of the noise xi (on the particles' device).

    Returns:
        The final particles ``[..., d]`` (detached) and, with ``metropolis=True``, the mean acceptance rate
        (a 0-d tensor; 1.0 otherwise). No host synchronisation happens inside the loop.
    """
    y = y.detach()
    accept_sum = torch.zeros((), device=y.device, dtype=y.dtype)
    if config.n_steps == 0:
        return y, accept_sum + 1.0
    u, grad = energy_and_grad(energy, y) if config.metropolis else (None, None)
    for h in config.step_sizes():
        if not config.metropolis:
            _, grad = energy_and_grad(energy, y)
        g = grad if config.grad_clip is None else _clip_per_particle(grad, config.grad_clip)
        noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        proposal = y - h * g + (2.0 * h) ** 0.5 * noise
        if not config.metropolis:
            y = proposal.detach()
            continue
        u_new, grad_new = energy_and_grad(energy, proposal)
        g_new = grad_new if config.grad_clip is None else _clip_per_particle(grad_new, config.grad_clip)
        log_ratio = (u - u_new) + _log_proposal(y, proposal, g_new, h) - _log_proposal(proposal, y, g, h)
        uniform = torch.rand(log_ratio.shape, generator=generator, device=y.device, dtype=y.dtype)
        accept = torch.log(uniform) < log_ratio
        y = torch.where(accept.unsqueeze(-1), proposal, y).detach()
        u = torch.where(accept, u_new, u)
        grad = torch.where(accept.unsqueeze(-1), grad_new, grad)
        accept_sum = accept_sum + accept.to(y.dtype).mean()
    if not config.metropolis:
        return y, accept_sum + 1.0
    return y, accept_sum / config.n_steps
