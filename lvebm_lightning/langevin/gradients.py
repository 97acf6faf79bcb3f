"""The gradient of the chain's target, y -> (U(y), grad_y U(y)), taken with respect to the particles only.

Two ways, one result: ``energy_and_grad`` by ``torch.autograd.grad`` (the eager kernel) and ``functional_grad`` by
``torch.func.grad_and_value`` (traceable, for the compiled path). Neither builds parameter gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor

from lvebm_lightning.langevin.steps import GradFn

EnergyFn = Callable[[Tensor], Tensor]
"""Maps particles ``[..., d]`` to energies ``[...]``."""


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


def functional_grad(energy: EnergyFn, autocast: bool) -> GradFn:
    """y -> (U(y), grad_y U(y)) by ``torch.func.grad_and_value``: traceable, no parameter gradients."""

    def total(y: Tensor) -> tuple[Tensor, Tensor]:
        with network_precision(y, autocast):
            u = energy(y)
        u = u.to(y.dtype)
        return u.sum(), u

    def grad_fn(y: Tensor) -> tuple[Tensor, Tensor]:
        grad, (_, u) = torch.func.grad_and_value(total, has_aux=True)(y)
        return u, grad

    return grad_fn
