"""The density estimator a user would otherwise pick: a neural spline flow (zuko, the ``bench`` extra).

``fit_flow`` trains ``zuko.flows.NSF`` by maximum likelihood on standardised data (the splines act on [-5, 5]) and
``flow_nll`` returns the exact test NLL in the data's own units, -log p(x) = -log p_std(s(x)) + sum_d log sigma_d,
the same units as the LVEBM's quadrature NLL. A flow has an exact density in any dimension, so it is the reference
for NLL where the EBM's cannot be computed; samples from it feed the same W2 as the EBM's.

A flow samples jointly, not conditionally: ``flow_conditional`` samples the missing coordinates of a datum given
the observed ones by MALA on the flow's exact log density, x_m -> -log p(x_o, x_m) with x_o held fixed
(``conditional_mala``, the project's own Metropolis-adjusted kernel, so the conditional is exactly invariant).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from lvebm_lightning.langevin import LangevinConfig, langevin


def fit_flow(
    x_train: Tensor, *, steps: int = 3000, batch_size: int = 256, lr: float = 1e-3, transforms: int = 4,
    hidden: int = 128, seed: int = 0,
) -> tuple[torch.nn.Module, Tensor, Tensor]:
    """An NSF fitted to x_train ``[N, dx]`` (data units) with Adam and cosine decay; returns the flow and the
    standardisation (mean, std) it was trained under."""
    import zuko

    torch.manual_seed(seed)
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-12)
    x = (x_train - mean) / std
    flow = zuko.flows.NSF(features=x.shape[1], transforms=transforms, hidden_features=[hidden, hidden])
    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rows = torch.randint(len(x), (min(batch_size, len(x)),), generator=gen)
        loss = -flow().log_prob(x[rows]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    flow.eval()
    return flow, mean, std


@torch.no_grad()
def flow_nll(flow: torch.nn.Module, mean: Tensor, std: Tensor, x: Tensor) -> Tensor:
    """Exact -log p(x) ``[B]`` in data units of data x ``[B, dx]``."""
    return -flow().log_prob((x - mean) / std) + std.log().sum()


@torch.no_grad()
def flow_sample(flow: torch.nn.Module, mean: Tensor, std: Tensor, n: int, seed: int = 0) -> Tensor:
    """n samples ``[n, dx]`` in data units."""
    torch.manual_seed(seed)
    return flow().sample((n,)) * std + mean


def gaussian_nll(x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
    """-log N(x; mean, cov) ``[B]``, the reference the flow's NLL is checked against."""
    d = x - mean
    maha = (d @ torch.linalg.inv(cov) * d).sum(-1)
    return 0.5 * (maha + torch.logdet(cov) + x.shape[1] * math.log(2 * math.pi))


TARGET_ACCEPTANCE = 0.57
"""MALA's optimal acceptance rate in high dimension (Roberts and Rosenthal, 1998): the warm-up tunes h to it."""


def conditional_mala(
    log_prob: Callable[[Tensor], Tensor], x: Tensor, hidden: list[int], starts: Tensor, n_steps: int,
    generator: torch.Generator, step_size: float = 1e-2, warmup_blocks: int = 10, block: int = 25,
) -> tuple[Tensor, float]:
    """Samples of the hidden coordinates of x given the rest under the density ``log_prob`` (``[..., dx]`` ->
    ``[...]``): MALA on x_h -> -log_prob(x with x_h in place), x ``[B, dx]``, from ``starts`` ``[B, S, h]``.

    ``warmup_blocks`` blocks of ``block`` steps tune one h for all chains towards ``TARGET_ACCEPTANCE`` (h times
    exp(2 (acceptance - target)) after each block; these steps are discarded as burn-in), then ``n_steps`` steps
    run at that fixed h, so the chains' law is exactly invariant. Returns the samples ``[B, S, h]`` and h."""
    b, s, _ = starts.shape
    full = x.unsqueeze(1).expand(b, s, x.shape[1]).clone()
    index = torch.tensor(hidden, device=x.device)

    def energy(y: Tensor) -> Tensor:
        return -log_prob(full.index_copy(-1, index, y))

    y, h = starts, step_size
    for _ in range(warmup_blocks):
        y, acceptance = langevin(energy, y, LangevinConfig(step_size=h, n_steps=block), generator)
        h *= math.exp(2.0 * (float(acceptance) - TARGET_ACCEPTANCE))
    y, _ = langevin(energy, y, LangevinConfig(step_size=h, n_steps=n_steps), generator)
    return y, h


def flow_conditional(
    flow: torch.nn.Module, mean: Tensor, std: Tensor, x: Tensor, hidden: list[int], starts: Tensor, n_steps: int,
    seed: int = 0,
) -> Tensor:
    """The flow's conditional samples ``[B, S, h]`` (data units) of the ``hidden`` coordinates of x ``[B, dx]``
    (data units) given the rest, by ``conditional_mala`` in the flow's standardised units from ``starts``
    ``[B, S, h]`` (data units): a warm-up of 4 blocks of n_steps / 8 steps, then n_steps at the tuned h."""
    generator = torch.Generator().manual_seed(seed)
    distribution = flow()
    scale, shift = std[hidden], mean[hidden]
    y, _ = conditional_mala(distribution.log_prob, (x - mean) / std, hidden, (starts - shift) / scale, n_steps,
                            generator, warmup_blocks=4, block=max(1, n_steps // 8))
    return y.detach() * scale + shift
