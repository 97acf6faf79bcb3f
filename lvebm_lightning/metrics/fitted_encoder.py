"""The restricted-posterior reference: a Gaussian encoder fitted to a frozen energy, and its bounds.

For a trained energy E (theta frozen), the encoder q_phi(z | x) = N(mu_phi(x), diag sigma_phi(x)^2) of
``posterior.AmortisedPosterior`` is fitted on training data by maximising

    ELBO_phi(x) = E_{q_phi}[-E(x, z)] + H(q_phi(. | x)) - log Z = log p(x) - KL(q_phi(. | x) || p(z | x)),

until its held-out ELBO stops rising. Its gap to log p(x) is the KL of the best Gaussian (amortised) posterior,
so "the particle posterior's ELBO is strictly tighter than a Gaussian encoder's" is measured on the same energy
and the same log Z: ``encoder_bounds`` beside ``metrics.elbo``. q_phi's density is exact, so its importance-weighted
bound IW(S) = E log (1/S) sum_s exp(-E(x, z_s) - log q_phi(z_s | x)) - log Z is reported beside it too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lvebm_lightning.energies.base import Energy
from lvebm_lightning.langevin import LangevinConfig
from lvebm_lightning.particles import AmortisedPosterior


@dataclass
class FittedEncoder:
    """The fitted encoder, the held-out ELBO (+ log Z) after each check, and whether it stopped rising."""

    encoder: AmortisedPosterior
    history: list[float]
    converged: bool


def fit_encoder(
    energy: Energy,
    x: Tensor,
    dz: int,
    *,
    max_steps: int = 3000,
    check_every: int = 250,
    batch_size: int = 256,
    n_samples: int = 8,
    lr: float = 3e-3,
    width: int = 128,
    depth: int = 2,
    tolerance: float = 1e-3,
    generator: torch.Generator | None = None,
) -> FittedEncoder:
    """Fit q_phi to the frozen ``energy`` on data x ``[N, dx]`` (standardised units).

    Adam on phi only (theta gets no gradient), minibatches of ``batch_size``, K = ``n_samples`` reparameterised
    samples per datum. A tenth of x (at least one row) is held out; every ``check_every`` steps its ELBO is
    estimated with common random numbers, and fitting stops when it rose by less than ``tolerance`` nats per
    datum since the last check (``converged``) or at ``max_steps``.
    """
    n = x.shape[0]
    order = torch.randperm(n, generator=generator, device=x.device)
    n_held = max(1, n // 10)
    held, train = x[order[:n_held]], x[order[n_held:]] if n > 1 else x
    encoder = AmortisedPosterior(
        x.shape[1], dz, n_samples, LangevinConfig(step_size=1.0, n_steps=0), width=width, depth=depth, lr=lr
    ).to(device=x.device, dtype=x.dtype)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=lr)
    check_seed = int(torch.randint(2**31 - 1, (1,), generator=generator, device=x.device))
    history: list[float] = []
    converged = False
    for step in range(1, max_steps + 1):
        rows = torch.randint(len(train), (min(batch_size, len(train)),), generator=generator, device=x.device)
        optimizer.zero_grad(set_to_none=True)
        encoder.loss(energy, train[rows], generator).backward()
        optimizer.step()
        if step % check_every == 0:
            crn = torch.Generator(device=x.device).manual_seed(check_seed)  # the same draws at every check
            history.append(float(encoder.elbo(energy, held, 64, crn).mean()))
            if len(history) >= 2 and history[-1] - history[-2] < tolerance:
                converged = True
                break
    for p in encoder.parameters():
        p.requires_grad_(False)
    return FittedEncoder(encoder=encoder, history=history, converged=converged)


@torch.no_grad()
def encoder_bounds(
    energy: Energy, encoder: AmortisedPosterior, x: Tensor, log_z: float | Tensor, n_samples: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """ELBO and IW(S) bounds on log p(x_b) ``[B]`` (float64, standardised units) of the encoder's q_phi."""
    mu, log_sigma = encoder(x)
    eps = torch.randn((x.shape[0], n_samples, encoder.dz), generator=generator, device=x.device, dtype=x.dtype)
    z = mu.unsqueeze(1) + log_sigma.exp().unsqueeze(1) * eps
    e = energy(x.unsqueeze(1).expand(-1, n_samples, -1), z).to(torch.float64)
    log_q = (-0.5 * eps.to(torch.float64) ** 2 - log_sigma.to(torch.float64).unsqueeze(1)).sum(-1)
    log_q = log_q - 0.5 * encoder.dz * math.log(2.0 * math.pi)
    log_w = -e - log_q
    log_z = torch.as_tensor(log_z, dtype=torch.float64)
    iw = torch.logsumexp(log_w, dim=1) - math.log(n_samples)
    return log_w.mean(1) - log_z, iw - log_z
