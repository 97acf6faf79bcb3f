"""The overdamped Langevin kernel shared by every particle system.

One step of the Euler-Maruyama discretisation of dY = -grad U(Y) dt + sqrt(2) dW with step size h:

    Y <- Y - h grad U(Y) + sqrt(2 h) xi,        xi ~ N(0, I)

Its stationary law tends to p(y) proportional to exp(-U(y)) as h -> 0 (the bias of the unadjusted kernel, ``ula``,
is O(h)); with ``kernel="mala"`` each move is accepted with the Metropolis-Hastings probability of the Langevin
proposal, which makes exp(-U) exactly invariant at any h.

The kernel is a plain function of (energy, particles, config, generator): one loop over small step functions
(``langevin.steps``: ``ula``, ``mala``, any registered one), chosen by ``LangevinConfig.kernel``. It never builds
parameter gradients: the gradient is ``torch.autograd.grad(U.sum(), y)`` with respect to the particles only, and the
particles are detached after every step. Shapes are fixed inside the loop, the noise comes from the generator
that is passed in and nothing branches on tensor values; ``compile=True`` runs the same steps compiled
(``langevin.compiled``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lvebm_lightning.langevin.compiled import compiled_langevin
from lvebm_lightning.langevin.config import LangevinConfig
from lvebm_lightning.langevin.gradients import EnergyFn, energy_and_grad
from lvebm_lightning.langevin.steps import STEPS, mean_acceptance


def langevin(
    energy: EnergyFn,
    y: Tensor,
    config: LangevinConfig,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Run T steps of the configured kernel (``config.kernel``: ULA or MALA) on ``energy`` from ``y``.

    Each step draws its noise xi ``[..., d]`` (then, for MALA, its uniforms ``[...]``) from ``generator`` and
    hands them to the step function (``langevin.steps``); with ``config.compile`` the steps run through the
    compiled path (``langevin.compiled``), which consumes the same draws in the same order.

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
        return compiled_langevin(energy, y, config, generator)
    step = STEPS[config.kernel]

    def grad_fn(v: Tensor) -> tuple[Tensor, Tensor]:
        return energy_and_grad(energy, v, config.autocast)

    state = step.init(grad_fn, y)
    for h in config.step_sizes():
        noise, uniform = step.draw(y, generator)
        state = step.update(grad_fn, state, h, noise, uniform, config.grad_clip)
    return state.y, mean_acceptance(step, state, config.n_steps)
