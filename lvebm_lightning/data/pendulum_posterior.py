"""The Bayes-optimal answers for the pendulum, whose generator is known (``systems.Pendulum``): the limit of
reconstruction and of latent recovery that no model can beat on average.

The generator draws H ~ U[h_min, h_max] and phi ~ U[0, 2 pi); phi enters only through the RK4 step s at which the
first observation falls, s = rint(phi T(H) / (2 pi dt)), uniform over 0 .. S(H) - 1 with S(H) = rint(T(H) / dt)
(the last value, a full period, is the first state again). The noise-free trajectory is the angle path of energy H
read at steps s + j stride, and x = that + N(0, noise^2 I). So on a grid of H (midpoints of ``n_energy`` equal bins),
with every start step s, the candidates c_(H, s) carry the prior weight 1 / (n_energy S(H)) and the posterior given
the observed coordinates x_o is

    w_(H, s) proportional to exp(-|x_o - c_(H, s), o|^2 / (2 noise^2)) / S(H),

and the posterior predictive of the missing coordinates is the mixture sum w N(c_(H, s), m, noise^2 I): its mean is
the Bayes-optimal reconstruction under squared error, its quantiles the calibrated interval. The approximations are
the grid in H (its spacing moves a trajectory by far less than the noise with the default 800 bins) and the
mixture kept to each datum's ``n_keep`` heaviest candidates (``dropped_mass`` bounds the weight left out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lvebm_lightning.data.systems import Pendulum


@dataclass
class PendulumPosterior:
    """Posterior summaries of B data: ``samples`` ``[B, S, dx]`` (observed coordinates as given, missing ones drawn
    from the predictive), ``mean`` ``[B, dx]`` (the predictive mean there), and the posterior means of the hidden
    variables, ``energy`` ``[B]``, ``cos_phase`` and ``sin_phase`` ``[B]``; ``dropped_mass`` ``[B]``, an upper bound
    of the posterior weight of the candidates left out of the mixture."""

    samples: Tensor
    mean: Tensor
    energy: Tensor
    cos_phase: Tensor
    sin_phase: Tensor
    dropped_mass: Tensor


def candidates(system: Pendulum, n_energy: int = 800) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every noise-free trajectory of the grid: angles ``[C, dx]``, log prior weights ``[C]``, and each one's
    energy and phase ``[C]`` (float64)."""
    energy = system.h_min + (np.arange(n_energy) + 0.5) * (system.h_max - system.h_min) / n_energy
    n_starts = np.rint(system.period(energy) / system.dt).astype(np.int64)
    span = (system.n_obs - 1) * system.stride
    paths = torch.from_numpy(system.paths(energy, int(n_starts.max()) + span))
    start = torch.arange(int(n_starts.max()))
    valid = start[None, :] < torch.from_numpy(n_starts)[:, None]  # [n_energy, max S]
    row, s = valid.nonzero(as_tuple=True)
    steps = s[:, None] + system.stride * torch.arange(system.n_obs)[None, :]
    angles = paths[row[:, None], steps]
    counts = torch.from_numpy(n_starts).double()
    log_prior = -torch.log(counts[row] * n_energy)
    phase = 2.0 * torch.pi * s.double() / counts[row]
    return angles, log_prior, torch.from_numpy(energy)[row], phase


@torch.no_grad()
def pendulum_posterior(
    system: Pendulum, x: Tensor, observed: Tensor, n_samples: int = 256, n_energy: int = 800,
    generator: torch.Generator | None = None, chunk: int = 32, n_keep: int = 4096,
) -> PendulumPosterior:
    """The exact posterior (module docstring) of data x ``[B, dx]`` (data units) given the coordinates where the
    boolean mask ``observed`` ``[dx]`` is true; ``n_samples`` predictive draws per datum."""
    angles, log_prior, energy, phase = candidates(system, n_energy)
    x = x.double()
    obs, miss = observed.bool(), ~observed.bool()
    # The log weights in float32 (their spread near the maximum is a few nats; float32 keeps it to 1e-3 nats),
    # the kept mixture in float64.
    c_obs, c_miss = angles[:, obs].float(), angles[:, miss].contiguous()
    base = (log_prior - (c_obs.double() ** 2).sum(-1) / (2.0 * system.noise**2)).float()  # [C]
    scale = 1.0 / system.noise**2
    outputs: list[tuple[Tensor, ...]] = []
    for lo in range(0, len(x), chunk):
        xo = x[lo:lo + chunk][:, obs]
        # log w = log prior - |x_o - c_o|^2 / (2 noise^2), up to a constant per datum: the |x_o|^2 term dropped
        logits = torch.addmm(base, xo.float(), c_obs.T, alpha=scale)  # [b, C]
        top, keep = logits.topk(min(n_keep, logits.shape[-1]), dim=-1)  # [b, n_keep], descending
        top = top.double()
        weights = torch.softmax(top, dim=-1)
        # every candidate left out weighs at most the lightest one kept
        dropped = (logits.shape[-1] - top.shape[-1]) * torch.exp(top[:, -1] - top.logsumexp(-1))
        pick = keep.gather(1, torch.multinomial(weights.float(), n_samples, replacement=True, generator=generator))
        draws = x[lo:lo + chunk].unsqueeze(1).repeat(1, n_samples, 1)
        noise = torch.randn(*pick.shape, int(miss.sum()), generator=generator, dtype=torch.float64)
        draws[:, :, miss] = c_miss[pick] + system.noise * noise
        mean = x[lo:lo + chunk].clone()
        mean[:, miss] = torch.einsum("bk,bkd->bd", weights, c_miss[keep])
        hidden = [(weights * v[keep]).sum(-1) for v in (energy, phase.cos(), phase.sin())]
        outputs.append((draws, mean, *hidden, dropped))
    return PendulumPosterior(*(torch.cat(parts) for parts in zip(*outputs)))
