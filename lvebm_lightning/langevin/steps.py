"""The step functions of the Langevin kernel: one small pure function per discretisation.

Every step moves a chain state ``(y, u, grad, accept_sum)`` by one step of size h, given the Gaussian noise xi
``[..., d]`` and (for a Metropolis-adjusted step) the uniforms ``[...]`` that it consumes, both drawn by the
caller. A step takes the energy only through ``grad_fn: y -> (U(y) [...], grad_y U(y) [..., d])``, so the same
function runs eagerly (``torch.autograd.grad``) and compiled (``torch.func.grad_and_value``). A new
discretisation (underdamped, preconditioned) is a new function given to ``register_step``, not an edit of a
loop.

- ``ula_step``, the unadjusted Langevin algorithm (Euler-Maruyama of dY = -grad U dt + sqrt(2) dW):

      y' = y - h g(y) + sqrt(2 h) xi,

  with g the gradient, optionally rescaled per particle to norm <= c. Its stationary law carries an O(h) bias.
- ``mala_step``, the Metropolis-adjusted Langevin algorithm: the ULA move is a proposal y', accepted when
  log v < U(y) - U(y') + log q(y | y') - log q(y' | y), v ~ U(0, 1), q(b | a) = N(b; a - h g(a), 2 h I), so
  exp(-U) is exactly invariant at any h. The state carries U and grad U of the current point, so each step
  costs one energy-and-gradient evaluation, at the proposal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

GradFn = Callable[[Tensor], tuple[Tensor, Tensor]]
"""Maps particles ``[..., d]`` to (U ``[...]``, grad_y U ``[..., d]``), detached."""


class ChainState(NamedTuple):
    """Particles y ``[..., d]``; U(y) ``[...]`` and grad U(y) ``[..., d]`` where the step keeps them (None
    otherwise); the running sum of per-step acceptance rates (0-d)."""

    y: Tensor
    u: Tensor | None
    grad: Tensor | None
    accept_sum: Tensor


def clip_per_particle(grad: Tensor, max_norm: float) -> Tensor:
    """grad ``[..., d]`` with each particle's vector rescaled to Euclidean norm at most ``max_norm``."""
    norm = grad.norm(dim=-1, keepdim=True)
    return grad * (max_norm / norm.clamp_min(max_norm))


def log_proposal(y_to: Tensor, y_from: Tensor, grad_from: Tensor, h: float | Tensor) -> Tensor:
    """log q(y_to | y_from) ``[...]`` of the Langevin proposal N(y_from - h grad, 2 h I), up to a constant."""
    return -((y_to - y_from + h * grad_from) ** 2).sum(-1) / (4.0 * h)


def ula_step(
    grad_fn: GradFn, state: ChainState, h: float | Tensor, noise: Tensor, uniform: Tensor | None,
    grad_clip: float | None,
) -> ChainState:
    """One unadjusted step y' = y - h g(y) + sqrt(2 h) xi (``uniform`` is unused)."""
    _, grad = grad_fn(state.y)
    g = grad if grad_clip is None else clip_per_particle(grad, grad_clip)
    y = (state.y - h * g + (2.0 * h) ** 0.5 * noise).detach()
    return ChainState(y, None, None, state.accept_sum)


def mala_step(
    grad_fn: GradFn, state: ChainState, h: float | Tensor, noise: Tensor, uniform: Tensor | None,
    grad_clip: float | None,
) -> ChainState:
    """One Metropolis-adjusted step: propose with ULA from the stored (U, grad U), accept with the MALA ratio."""
    y, u, grad = state.y, state.u, state.grad
    g = grad if grad_clip is None else clip_per_particle(grad, grad_clip)
    proposal = y - h * g + (2.0 * h) ** 0.5 * noise
    u_new, grad_new = grad_fn(proposal)
    g_new = grad_new if grad_clip is None else clip_per_particle(grad_new, grad_clip)
    log_ratio = (u - u_new) + log_proposal(y, proposal, g_new, h) - log_proposal(proposal, y, g, h)
    accept = torch.log(uniform) < log_ratio
    return ChainState(
        torch.where(accept.unsqueeze(-1), proposal, y).detach(),
        torch.where(accept, u_new, u),
        torch.where(accept.unsqueeze(-1), grad_new, grad),
        state.accept_sum + accept.to(y.dtype).mean(),
    )


StepFn = Callable[[GradFn, ChainState, "float | Tensor", Tensor, "Tensor | None", "float | None"], ChainState]


@dataclass(frozen=True)
class Step:
    """A discretisation: its step function and what it needs.

    Attributes:
        update: the step function.
        adjusted: it accepts or rejects (draws uniforms ``[...]`` after the noise each step, keeps U and grad U
            in the state, and reports an acceptance rate).
    """

    update: StepFn
    adjusted: bool

    def init(self, grad_fn: GradFn, y: Tensor) -> ChainState:
        """The chain state at particles ``y``: U and grad U evaluated where the step keeps them."""
        zero = torch.zeros((), device=y.device, dtype=y.dtype)
        if not self.adjusted:
            return ChainState(y, None, None, zero)
        u, grad = grad_fn(y)
        return ChainState(y, u, grad, zero)

    def draw(self, y: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
        """One step's noise xi ``[..., d]`` and, when adjusted, uniforms ``[...]``, in that order from ``generator``."""
        noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        if not self.adjusted:
            return noise, None
        return noise, torch.rand(y.shape[:-1], generator=generator, device=y.device, dtype=y.dtype)


STEPS: dict[str, Step] = {"ula": Step(ula_step, adjusted=False), "mala": Step(mala_step, adjusted=True)}
"""The kernels by name (``sampler.*.kernel``)."""


def register_step(name: str, update: StepFn, adjusted: bool) -> None:
    """Make the step function ``update`` a kernel named ``name``: every chain then takes ``kernel=name``
    (training, long chains, inference, reconstruction, AIS). ``adjusted``: it accepts or rejects (``Step``)."""
    if name in STEPS and STEPS[name].update is not update:
        raise ValueError(f"a Langevin step named {name!r} is registered already; choose another name.")
    STEPS[name] = Step(update, adjusted)


def mean_acceptance(step: Step, state: ChainState, n_steps: int) -> Tensor:
    """The chain's mean acceptance rate (0-d): accept_sum / T for an adjusted step, 1 otherwise."""
    if not step.adjusted:
        return state.accept_sum + 1.0
    return state.accept_sum / n_steps
