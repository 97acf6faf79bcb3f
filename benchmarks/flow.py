"""The density estimator a user would otherwise pick: a neural spline flow (zuko, the ``bench`` extra).

``fit_flow`` trains ``zuko.flows.NSF`` by maximum likelihood on standardised data (the splines act on [-5, 5]) and
``flow_nll`` returns the exact test NLL in the data's own units, -log p(x) = -log p_std(s(x)) + sum_d log sigma_d,
the same units as the LVEBM's quadrature NLL. A flow has an exact density in any dimension, so it is the reference
for NLL where the EBM's cannot be computed; samples from it feed the same W2 as the EBM's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


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
