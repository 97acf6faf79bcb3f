"""The Langevin kernels written out once more, for tests that replay a run's chains from its recorded random states."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def chain(u: Callable[[Tensor], Tensor], y: Tensor, sizes: list[float], kernel: str, clip: float | None,
          generator: torch.Generator) -> Tensor:
    """Langevin y <- y - h g + sqrt(2 h) xi (g = grad U clipped per particle to norm <= clip); MALA accepts with
    probability min(1, exp(U(y) - U(y') + log q(y | y') - log q(y' | y)))."""

    def grad(v: Tensor) -> tuple[Tensor, Tensor]:
        v = v.detach().requires_grad_(True)
        value = u(v)
        g = torch.autograd.grad(value.sum(), v)[0]
        if clip is not None:
            g = g * torch.clamp(clip / g.norm(dim=-1, keepdim=True), max=1.0)
        return value.detach(), g

    value, g = grad(y)
    for h in sizes:
        noise = torch.randn(y.shape, generator=generator)
        proposal = y - h * g + math.sqrt(2 * h) * noise
        if kernel == "ula":
            y = proposal
            value, g = grad(y)
            continue
        uniform = torch.rand(y.shape[:-1], generator=generator)
        value_new, g_new = grad(proposal)
        log_q_back = -((y - proposal + h * g_new) ** 2).sum(-1) / (4 * h)
        log_q_forth = -((proposal - y + h * g) ** 2).sum(-1) / (4 * h)
        accept = torch.log(uniform) < value - value_new + log_q_back - log_q_forth
        y = torch.where(accept.unsqueeze(-1), proposal, y)
        value, g = torch.where(accept, value_new, value), torch.where(accept.unsqueeze(-1), g_new, g)
    return y.detach()
