"""Evidence lower bounds from each datum's latent particles, through a particle-mixture posterior.

For datum x_i with particles z_i^k (k = 1..K), the density

    q_i(z) = (1/K) sum_k N(z; z_i^k, s_i^2 I)

is a real, normalised density, so for any bandwidth s_i > 0 and with log w(z) = -E(x_i, z) - log q_i(z):

    ELBO_i     = E_{q_i}[log w(z)] - log Z                          <= log p(x_i)
    IW_i(S)    = E_{z_1..S ~ q_i}[log (1/S) sum_s w(z_s)] - log Z    in [ELBO_i, log p(x_i)], rising with S.

Bandwidth rule. Any s_i gives a valid bound, so s_i is chosen to make it tight: per datum, the candidate
bandwidths (a log-spaced grid, plus Silverman's rule on the particle spread when K >= 2) are scored by the
ELBO estimated on one set of S samples, drawn once and shared by all candidates (common random numbers:
z = z_i^{k_s} + s eps_s) so that the comparison is not swamped by sampling noise, and the best one is kept.
Maximising a noisy estimate over candidates biases that estimate upward, so the reported ELBO and IW bound
are estimated on fresh, independent samples from the chosen q_i: given the choice, they are unbiased
(ELBO) or downward-biased (IW) estimates of bounds on log p(x_i).
"""

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lvebm_lightning.energy import Energy
from lvebm_lightning.metrics.quadrature import batched_energy


@dataclass
class ElboResult:
    """Per-datum bounds on log p(x) ([B] float64 tensors) and the bandwidths s_i [B] that define q_i.

    `elbo_std_err` is the Monte-Carlo standard error of `elbo`: std_s(log w) / sqrt(S).
    """

    elbo: Tensor
    iw_bound: Tensor
    elbo_std_err: Tensor
    bandwidth: Tensor


def default_bandwidths() -> Tensor:
    """Candidate bandwidths 10^-2 .. 10^1 (13 values, ratio ~1.78), for latents in standardised units."""
    return torch.logspace(-2, 1, 13, dtype=torch.float64)


def silverman_bandwidth(z_particles: Tensor) -> Tensor:
    """Silverman's rule per datum for particles [B, K, dz], K >= 2.

        s_i = sigma_i (4 / ((dz + 2) K))^(1 / (dz + 4)),

    where sigma_i is the particle standard deviation pooled over latent dimensions: sqrt(mean_j Var_k z_ij^k).
    Returns [B] in float64 (zero where the particles coincide).
    """
    _, n_particles, dz = z_particles.shape
    spread = z_particles.to(torch.float64).var(dim=1).mean(dim=-1).sqrt()
    return spread * (4.0 / ((dz + 2) * n_particles)) ** (1.0 / (dz + 4))


def _draw_standard(
    z_particles: Tensor, n_samples: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Component centres z_i^{k_s} [B, S, dz], k_s uniform on 1..K, and standard normal noise [B, S, dz]."""
    n_data, n_particles, dz = z_particles.shape
    device = z_particles.device
    component = torch.randint(n_particles, (n_data, n_samples), generator=generator, device=device)
    centres = torch.gather(z_particles, 1, component.unsqueeze(-1).expand(-1, -1, dz))
    noise = torch.randn(n_data, n_samples, dz, generator=generator, device=device, dtype=z_particles.dtype)
    return centres, noise


def mixture_sample(
    z_particles: Tensor, s: Tensor, n_samples: int, generator: torch.Generator | None = None
) -> Tensor:
    """Draw S = `n_samples` samples [B, S, dz] from q_i(z) = (1/K) sum_k N(z; z_i^k, s_i^2 I).

    z_particles: [B, K, dz] mixture centres; s: [B] bandwidths. A component is picked uniformly, then
    Gaussian noise of scale s_i is added.
    """
    centres, noise = _draw_standard(z_particles, n_samples, generator)
    return centres + s.to(centres).view(-1, 1, 1) * noise


def mixture_log_prob(z_particles: Tensor, s: Tensor, z_query: Tensor) -> Tensor:
    """log q_i(z) [B, S] at z_query [B, S, dz], for centres z_particles [B, K, dz] and bandwidths s [B].

        log q_i(z) = logsumexp_k(-|z - z_i^k|^2 / (2 s_i^2)) - log K - (dz / 2) log(2 pi s_i^2)

    computed in float64.
    """
    centres = z_particles.to(torch.float64)
    z_query = z_query.to(torch.float64)
    s = s.to(torch.float64).view(-1, 1)
    _, n_particles, dz = centres.shape
    sq_dist = (z_query.unsqueeze(2) - centres.unsqueeze(1)).pow(2).sum(dim=-1)
    log_kernel = (-sq_dist / (2 * s.unsqueeze(-1) ** 2)).logsumexp(dim=-1)
    return log_kernel - math.log(n_particles) - 0.5 * dz * torch.log(2 * math.pi * s**2)


def _log_weights(
    energy: Energy, x: Tensor, z_particles: Tensor, s: Tensor, z: Tensor, batch_size: int
) -> Tensor:
    """log w = -E(x_i, z_is) - log q_i(z_is) [B, S] (float64) for samples z [B, S, dz] from q_i."""
    n_data, n_samples, dz = z.shape
    x_pairs = x.repeat_interleave(n_samples, dim=0)
    z_pairs = z.reshape(n_data * n_samples, dz).to(x.dtype)
    neg_energy = -batched_energy(energy, x_pairs, z_pairs, batch_size).view(n_data, n_samples)
    return neg_energy - mixture_log_prob(z_particles, s, z)


def elbo(
    energy: Energy,
    x: Tensor,
    z_particles: Tensor,
    log_z: float,
    n_samples: int = 64,
    generator: torch.Generator | None = None,
    bandwidths: Tensor | None = None,
    batch_size: int = 65536,
) -> ElboResult:
    """ELBO and importance-weighted bound on log p(x_i) for x [B, dx] from particles z_particles [B, K, dz].

    q_i is the particle mixture with bandwidth s_i chosen per datum from `bandwidths` ([C], default
    `default_bandwidths()`) plus Silverman's value when K >= 2, by the ELBO on one set of S = `n_samples`
    samples; the returned bounds use S fresh samples (see the module docstring). `log_z` is log Z of the
    joint density (quadrature or AIS; with AIS the bounds inherit its upward bias). Energies are evaluated
    without autograd, `batch_size` (x, z) pairs at a time: (C + 2) B S evaluations in all.
    """
    if z_particles.ndim != 3 or z_particles.shape[0] != x.shape[0]:
        raise ValueError(
            f"z_particles must be [B, K, dz] with B = {x.shape[0]} rows of x, got {tuple(z_particles.shape)}"
        )
    n_data, n_particles, _ = z_particles.shape
    z_particles = z_particles.to(torch.float64)
    grid = default_bandwidths() if bandwidths is None else bandwidths.to(torch.float64)
    candidates = grid.to(x.device).expand(n_data, -1)
    if n_particles >= 2:
        silverman = silverman_bandwidth(z_particles).clamp_min(float(grid.min())).unsqueeze(-1)
        candidates = torch.cat([candidates, silverman], dim=-1)

    centres, noise = _draw_standard(z_particles, n_samples, generator)
    selection_elbo = torch.stack(
        [
            _log_weights(energy, x, z_particles, s, centres + s.view(-1, 1, 1) * noise, batch_size).mean(1)
            for s in candidates.unbind(dim=-1)
        ],
        dim=-1,
    )
    bandwidth = candidates.gather(1, selection_elbo.argmax(dim=-1, keepdim=True)).squeeze(-1)

    z = mixture_sample(z_particles, bandwidth, n_samples, generator)
    log_w = _log_weights(energy, x, z_particles, bandwidth, z, batch_size)
    return ElboResult(
        elbo=log_w.mean(dim=1) - log_z,
        iw_bound=log_w.logsumexp(dim=1) - math.log(n_samples) - log_z,
        elbo_std_err=log_w.std(dim=1) / math.sqrt(n_samples),
        bandwidth=bandwidth,
    )
