"""Evidence lower bounds from each datum's latent particles, through a particle-mixture posterior.

For datum x_i with particles z_i^k (k = 1..K), mean m_i and covariance C_i, q_i is a Gaussian mixture with one
component per particle and a common scale matrix M_i (lower triangular):

    q_i(z) = (1/K) sum_k N(z; c_i^k, M_i M_i^T),    c_i^k = m_i + a (z_i^k - m_i).

Two shapes of kernel, each a real, normalised density, so any choice gives a valid bound:
- isotropic (the kernel density estimate): a = 1, M_i = s I;
- shaped by the particles' covariance, C_i = L_i L_i^T: M_i = s L_i, with a = 1 (a KDE whose kernel follows the
  particle cloud) or a < 1 with s = sqrt(1 - a^2), centres shrunk towards the mean so that q_i keeps the particles'
  covariance; a = 0 is the Gaussian fitted to the particles by moments. A thin, tilted or anisotropic cloud (a
  latent that is well determined in one direction and not in another) is poorly covered by isotropic kernels of
  K points: their ELBO then measures the kernel, not the posterior.
With log w(z) = -E(x_i, z) - log q_i(z):

    ELBO_i     = E_{q_i}[log w(z)] - log Z                          <= log p(x_i)
    IW_i(S)    = E_{z_1..S ~ q_i}[log (1/S) sum_s w(z_s)] - log Z    in [ELBO_i, log p(x_i)], rising with S.

Kernel rule. Any kernel gives a valid bound, so it is chosen to make the bound tight: per datum, the candidates
(isotropic: a log-spaced grid of s, plus Silverman's rule on the particle spread when K >= 2; shaped, when K >= 2:
a = 1 with s = {0.5, 1, 2} x Silverman's factor (4 / ((dz + 2) K))^(1 / (dz + 4)), and a = 0.8, 0.6, 0.4, 0 with
s = sqrt(1 - a^2)) are scored by the ELBO estimated on one set of S samples, drawn once and shared by all
candidates (common random numbers: z = c_i^{k_s} + M_i eps_s) so that the comparison is not swamped by sampling
noise, and the best one is kept. Maximising a noisy estimate over candidates biases that estimate upward, so the
reported ELBO and IW bound are estimated on fresh, independent samples from the chosen q_i: given the choice,
they are unbiased (ELBO) or downward-biased (IW) estimates of bounds on log p(x_i).
"""

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lvebm_lightning.energies.base import Energy
from lvebm_lightning.metrics.quadrature import batched_energy


@dataclass
class ElboResult:
    """Per-datum bounds on log p(x) ([B] float64 tensors) and the kernel that defines q_i (module docstring).

    `elbo_std_err` is the Monte-Carlo standard error of `elbo`: std_s(log w) / sqrt(S). `bandwidth` is s_i,
    `shaped` [B] bool whether M_i = s_i L_i (else s_i I), `shrink` the centres' factor a_i (1: the particles).
    """

    elbo: Tensor
    iw_bound: Tensor
    elbo_std_err: Tensor
    bandwidth: Tensor
    shaped: Tensor
    shrink: Tensor


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


def _draw(
    n_data: int, n_particles: int, dz: int, n_samples: int, generator: torch.Generator | None, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Components k_s uniform on 1..K [B, S] and standard normal noise eps_s [B, S, dz] (float64), in that order."""
    component = torch.randint(n_particles, (n_data, n_samples), generator=generator, device=device)
    noise = torch.randn(n_data, n_samples, dz, generator=generator, device=device, dtype=torch.float64)
    return component, noise


def _kernel_draws(centres: Tensor, scale_tril: Tensor, component: Tensor, noise: Tensor) -> Tensor:
    """z_s = c_i^{k_s} + M_i eps_s [B, S, dz] for centres [B, K, dz] and M_i [B, dz, dz]."""
    index = component.unsqueeze(-1).expand(-1, -1, centres.shape[-1])
    return torch.gather(centres, 1, index) + noise @ scale_tril.transpose(1, 2)


def _isotropic(s: Tensor, dz: int) -> Tensor:
    """M_i = s_i I [B, dz, dz] for bandwidths s [B]."""
    return s.to(torch.float64).view(-1, 1, 1) * torch.eye(dz, dtype=torch.float64, device=s.device)


def mixture_sample(
    z_particles: Tensor, s: Tensor, n_samples: int, generator: torch.Generator | None = None
) -> Tensor:
    """Draw S = `n_samples` samples [B, S, dz] from q_i(z) = (1/K) sum_k N(z; z_i^k, s_i^2 I).

    z_particles: [B, K, dz] mixture centres; s: [B] bandwidths. A component is picked uniformly, then
    Gaussian noise of scale s_i is added. float64.
    """
    n_data, n_particles, dz = z_particles.shape
    component, noise = _draw(n_data, n_particles, dz, n_samples, generator, z_particles.device)
    return _kernel_draws(z_particles.to(torch.float64), _isotropic(s, dz), component, noise)


def mixture_log_prob(z_particles: Tensor, s: Tensor, z_query: Tensor) -> Tensor:
    """log q_i(z) [B, S] at z_query [B, S, dz], for centres z_particles [B, K, dz] and bandwidths s [B]:

        log q_i(z) = logsumexp_k(-|z - z_i^k|^2 / (2 s_i^2)) - log K - (dz / 2) log(2 pi s_i^2),

    the isotropic case of `kernel_mixture_log_prob`; float64.
    """
    return kernel_mixture_log_prob(z_particles, _isotropic(s, z_particles.shape[-1]), z_query)


def particle_cholesky(z_particles: Tensor) -> tuple[Tensor, Tensor]:
    """Mean m_i [B, dz] and Cholesky factor L_i [B, dz, dz] of the particles' covariance (divisor K - 1, K >= 2),
    with a ridge of 1e-6 of its mean variance (plus 1e-12) so that coinciding or collinear particles still
    give a proper density. float64."""
    z = z_particles.to(torch.float64)
    _, n_particles, dz = z.shape
    mean = z.mean(dim=1)
    centred = z - mean.unsqueeze(1)
    cov = centred.transpose(1, 2) @ centred / (n_particles - 1)
    ridge = 1e-6 * cov.diagonal(dim1=1, dim2=2).mean(-1) + 1e-12
    eye = torch.eye(dz, dtype=torch.float64, device=z.device)
    return mean, torch.linalg.cholesky(cov + ridge.view(-1, 1, 1) * eye)


def kernel_mixture_log_prob(centres: Tensor, scale_tril: Tensor, z_query: Tensor) -> Tensor:
    """log q_i(z) [B, S] at z_query [B, S, dz] of q_i = (1/K) sum_k N(c_i^k, M_i M_i^T), for centres [B, K, dz]
    and lower-triangular M_i [B, dz, dz]; float64."""
    centres, z_query, scale_tril = (t.to(torch.float64) for t in (centres, z_query, scale_tril))
    _, n_particles, dz = centres.shape
    diff = z_query.unsqueeze(2) - centres.unsqueeze(1)  # [B, S, K, dz]
    inverse = torch.linalg.solve_triangular(
        scale_tril, torch.eye(dz, dtype=torch.float64, device=centres.device).expand_as(scale_tril), upper=False
    )
    white = torch.einsum("bij,bskj->bski", inverse, diff)
    log_det = scale_tril.diagonal(dim1=1, dim2=2).abs().log().sum(-1)  # [B]
    log_kernel = (-0.5 * white.pow(2).sum(-1)).logsumexp(dim=-1)
    return log_kernel - math.log(n_particles) - 0.5 * dz * math.log(2 * math.pi) - log_det.unsqueeze(-1)


@dataclass
class _Kernel:
    """One candidate q_i per datum: centres [B, K, dz], scale M_i [B, dz, dz], and its description."""

    centres: Tensor
    scale_tril: Tensor
    bandwidth: Tensor
    shaped: bool
    shrink: float


def _candidates(z_particles: Tensor, grid: Tensor, shaped: bool) -> list[_Kernel]:
    n_data, n_particles, dz = z_particles.shape
    scales = list(grid.to(z_particles.device).expand(n_data, -1).unbind(-1))
    if n_particles >= 2:
        scales.append(silverman_bandwidth(z_particles).clamp_min(float(grid.min())))
    out = [_Kernel(z_particles, _isotropic(s, dz), s, False, 1.0) for s in scales]
    if shaped and n_particles >= 2:
        mean, chol = particle_cholesky(z_particles)
        factor = (4.0 / ((dz + 2) * n_particles)) ** (1.0 / (dz + 4))
        pairs = [(1.0, f * factor) for f in (0.5, 1.0, 2.0)] + [(a, math.sqrt(1 - a * a)) for a in (0.8, 0.6, 0.4, 0.0)]
        for a, scale in pairs:
            centres = mean.unsqueeze(1) + a * (z_particles - mean.unsqueeze(1))
            out.append(_Kernel(centres, scale * chol, torch.full_like(mean[:, 0], scale), True, a))
    return out


def _log_weights(
    energy: Energy, x: Tensor, centres: Tensor, scale_tril: Tensor, z: Tensor, batch_size: int
) -> Tensor:
    """log w = -E(x_i, z_is) - log q_i(z_is) [B, S] (float64) for samples z [B, S, dz] from q_i."""
    n_data, n_samples, dz = z.shape
    x_pairs = x.repeat_interleave(n_samples, dim=0)
    z_pairs = z.reshape(n_data * n_samples, dz).to(x.dtype)
    neg_energy = -batched_energy(energy, x_pairs, z_pairs, batch_size).view(n_data, n_samples)
    return neg_energy - kernel_mixture_log_prob(centres, scale_tril, z)


def elbo(
    energy: Energy,
    x: Tensor,
    z_particles: Tensor,
    log_z: float,
    n_samples: int = 64,
    generator: torch.Generator | None = None,
    bandwidths: Tensor | None = None,
    batch_size: int = 65536,
    shaped: bool = True,
) -> ElboResult:
    """ELBO and importance-weighted bound on log p(x_i) for x [B, dx] from particles z_particles [B, K, dz].

    q_i is the particle mixture whose kernel is chosen per datum (module docstring) among the isotropic ones
    with s in `bandwidths` ([C], default `default_bandwidths()`) plus Silverman's value when K >= 2, and, when
    `shaped` and K >= 2, the seven kernels shaped by the particles' covariance, by the ELBO on one set of
    S = `n_samples` samples; the returned bounds use S fresh samples. `log_z` is log Z of the joint density
    (quadrature or AIS; with AIS the bounds inherit its upward bias). Energies are evaluated without autograd,
    `batch_size` (x, z) pairs at a time: (C + 2 + 7) B S evaluations in all (C + 1 + 1 without the shaped ones).
    """
    if z_particles.ndim != 3 or z_particles.shape[0] != x.shape[0]:
        raise ValueError(
            f"z_particles must be [B, K, dz] with B = {x.shape[0]} rows of x, got {tuple(z_particles.shape)}"
        )
    n_data, n_particles, dz = z_particles.shape
    z_particles = z_particles.to(torch.float64)
    grid = default_bandwidths() if bandwidths is None else bandwidths.to(torch.float64)
    kernels = _candidates(z_particles, grid, shaped)

    device = z_particles.device
    component, noise = _draw(n_data, n_particles, dz, n_samples, generator, device)  # shared by every candidate
    scores = [
        _log_weights(energy, x, k.centres, k.scale_tril, _kernel_draws(k.centres, k.scale_tril, component, noise),
                     batch_size).mean(1)
        for k in kernels
    ]
    best = torch.stack(scores, dim=-1).argmax(dim=-1)  # [B]

    def pick(values: list[Tensor]) -> Tensor:
        stacked = torch.stack(values, dim=1)  # [B, C, ...]
        return stacked[torch.arange(n_data, device=stacked.device), best]

    centres = pick([k.centres for k in kernels])
    scale_tril = pick([k.scale_tril for k in kernels])
    bandwidth = pick([k.bandwidth for k in kernels])
    is_shaped = torch.tensor([k.shaped for k in kernels], device=device)[best]
    shrink = torch.tensor([k.shrink for k in kernels], dtype=torch.float64, device=device)[best]

    component, noise = _draw(n_data, n_particles, dz, n_samples, generator, device)  # fresh: the reported bounds
    log_w = _log_weights(energy, x, centres, scale_tril, _kernel_draws(centres, scale_tril, component, noise),
                         batch_size)
    return ElboResult(
        elbo=log_w.mean(dim=1) - log_z,
        iw_bound=log_w.logsumexp(dim=1) - math.log(n_samples) - log_z,
        elbo_std_err=log_w.std(dim=1) / math.sqrt(n_samples),
        bandwidth=bandwidth,
        shaped=is_shaped,
        shrink=shrink,
    )
