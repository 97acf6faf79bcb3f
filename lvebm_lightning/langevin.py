"""The overdamped Langevin kernel shared by every particle system.

One step of the Euler-Maruyama discretisation of dY = -grad U(Y) dt + sqrt(2) dW with step size h:

    Y <- Y - h grad U(Y) + sqrt(2 h) xi,        xi ~ N(0, I)

Its stationary law tends to p(y) proportional to exp(-U(y)) as h -> 0 (the bias of the unadjusted kernel is O(h));
with ``metropolis=True`` each move is accepted with the Metropolis-Hastings probability of the Langevin
proposal (MALA), which makes exp(-U) exactly invariant at any h.

The kernel is a plain function of (energy, particles, config, generator): one loop over small step functions
(``langevin_steps``: ``ula``, ``mala``), chosen by ``LangevinConfig.kernel``. It never builds parameter
gradients: the gradient is ``torch.autograd.grad(U.sum(), y)`` with respect to the particles only, and the
particles are detached after every step. Shapes are fixed inside the loop, the noise comes from the generator
that is passed in and nothing branches on tensor values; ``compile=True`` runs the same steps compiled
(``langevin_compiled``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from lvebm_lightning.langevin_steps import STEPS, ChainState, Step

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
        kernel: the step function by name (``langevin_steps.STEPS``: ula, mala); None: mala when ``metropolis``,
            else ula. An adjusted kernel sets ``metropolis`` True.
        compile: run the chain through the compiled path (``langevin_compiled``; eager if compilation fails).
        autocast: on CUDA, the energy network in bf16 autocast; particles and their updates stay float32.
    """

    step_size: float
    n_steps: int
    grad_clip: float | None = None
    metropolis: bool = False
    final_step_size: float | None = None
    kernel: str | None = None
    compile: bool = False
    autocast: bool = False

    def __post_init__(self) -> None:
        if self.kernel is None:
            object.__setattr__(self, "kernel", "mala" if self.metropolis else "ula")
        if self.kernel not in STEPS:
            raise ValueError(
                f"Langevin kernel must be one of {sorted(STEPS)}, got {self.kernel!r}; set sampler.*.kernel."
            )
        if self.metropolis and not STEPS[self.kernel].adjusted:
            raise ValueError(
                f"Langevin kernel {self.kernel!r} has no Metropolis correction but metropolis=true; use kernel=mala "
                "or metropolis=false."
            )
        object.__setattr__(self, "metropolis", STEPS[self.kernel].adjusted)
        if not self.step_size > 0:
            raise ValueError(f"Langevin step_size must be > 0, got {self.step_size}; set a positive step size.")
        if self.n_steps < 0:
            raise ValueError(f"Langevin n_steps must be >= 0, got {self.n_steps}.")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"Langevin grad_clip must be > 0 or null, got {self.grad_clip}.")
        if self.final_step_size is not None and not self.final_step_size > 0:
            raise ValueError(f"Langevin final_step_size must be > 0 or null, got {self.final_step_size}.")

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> LangevinConfig:
        """The kernel of a ``sampler.posterior`` / ``sampler.negative`` entry (its other keys are ignored)."""
        return cls(**{f.name: entry[f.name] for f in fields(cls) if f.name in entry})

    def step_sizes(self) -> list[float]:
        """The step size of every step: constant, or geometric from ``step_size`` to ``final_step_size``."""
        if self.final_step_size is None or self.n_steps <= 1:
            return [self.step_size] * self.n_steps
        ratio = (self.final_step_size / self.step_size) ** (1.0 / (self.n_steps - 1))
        return [self.step_size * ratio**t for t in range(self.n_steps)]


def energy_and_grad(energy: EnergyFn, y: Tensor, autocast: bool = False) -> tuple[Tensor, Tensor]:
    """U(y) ``[...]`` and grad_y U(y) ``[..., d]``, with gradients taken with respect to ``y`` only.

    With ``autocast`` on CUDA the network runs in bf16 autocast; y, U and the gradient stay in y's dtype.
    """
    with torch.enable_grad(), network_precision(y, autocast):
        y = y.detach().requires_grad_(True)
        u = energy(y)
        (grad,) = torch.autograd.grad(u.sum(), y)
    return u.detach().to(y.dtype), grad


def network_precision(y: Tensor, autocast: bool) -> AbstractContextManager:
    """bf16 autocast for the energy network when asked and y is on CUDA (a no-op elsewhere)."""
    if autocast and y.is_cuda:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def langevin(
    energy: EnergyFn,
    y: Tensor,
    config: LangevinConfig,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Run T steps of the configured kernel (``config.kernel``: ULA or MALA) on ``energy`` from ``y``.

    Each step draws its noise xi ``[..., d]`` (then, for MALA, its uniforms ``[...]``) from ``generator`` and
    hands them to the step function (``langevin_steps``); with ``config.compile`` the steps run through the
    compiled path (``langevin_compiled``), which consumes the same draws in the same order.

    Args:
        energy: U, mapping particles ``[..., d]`` to energies ``[...]``.
        y: initial particles ``[..., d]``; not modified.
        config: step size h, number of steps T and optional extras.
        generator: source of the noise xi (on the particles' device).

    Returns:
        The final particles ``[..., d]`` (detached) and, for an adjusted kernel, the mean acceptance rate
        (a 0-d tensor; 1.0 otherwise). No host synchronisation happens inside the loop.
    """
    y = y.detach()
    if config.n_steps == 0:
        return y, torch.ones((), device=y.device, dtype=y.dtype)
    if config.compile:
        from lvebm_lightning.langevin_compiled import compiled_langevin

        return compiled_langevin(energy, y, config, generator)
    step = STEPS[config.kernel]

    def grad_fn(v: Tensor) -> tuple[Tensor, Tensor]:
        return energy_and_grad(energy, v, config.autocast)

    state = step.init(grad_fn, y)
    for h in config.step_sizes():
        noise, uniform = step.draw(y, generator)
        state = step.update(grad_fn, state, h, noise, uniform, config.grad_clip)
    return state.y, mean_acceptance(step, state, config.n_steps)


def mean_acceptance(step: Step, state: ChainState, n_steps: int) -> Tensor:
    """The chain's mean acceptance rate (0-d): accept_sum / T for an adjusted step, 1 otherwise."""
    if not step.adjusted:
        return state.accept_sum + 1.0
    return state.accept_sum / n_steps
