"""Where chains that condition on data start: the prior, or the training data nearest in the observed coordinates.

A chain conditioned on a datum's observed coordinates x_o moves y = (x_m, z), the missing coordinates and the
latents (``inference.reconstruction``; posterior inference is the case with nothing missing). Its target
p(x_m, z | x_o) can be multi-modal, and a chain from N(0, I) can settle in a minor mode and stay there for
thousands of steps (docs/design.md section 8, "Where chains start"), so the start is part of the answer:

- ``prior``: x_m and z from N(0, I), the init distribution of training.
- ``neighbours``: the S chains of datum b start at its nearest training data n_1, n_2, ... in the observed
  coordinates (Euclidean distance over the observed coordinates only, standardised units): x_m from the
  neighbours' own values of the missing coordinates, z from their persistent particles (all K' stored particles
  of n_1, then of n_2, ...: chain s starts at particle s mod K' of neighbour floor(s / K')). The store is an
  amortised inference network that costs nothing. Without a store, z comes from the amortised encoder at the
  completed point (x_o, x_m of the neighbour), else from N(0, I); a model without latents needs only x_m.

Every start is returned as ``ChainStarts(x [B, S, dx], z [B, S, dz])`` in standardised units, the observed
coordinates of x equal to x_o: any chain on (x_m, z), or on z alone with x_m drawn given z, starts from it.
``skip`` starts a second, disjoint set of chains at the neighbours after the first ``skip`` particles.
``posterior_starts`` starts posterior chains (nothing missing) from one rank's shard of the store, reading only the
particles of the nearest data, and needs no collective.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from lvebm_lightning.particles.store import ParticleStore


class ChainStarts(NamedTuple):
    """Starting points of S chains per datum: x ``[B, S, dx]`` (x_o in the observed coordinates), z ``[B, S, dz]``."""

    x: Tensor
    z: Tensor


def nearest_rows(
    query: Tensor, reference: Tensor, k: int, observed: Tensor | None = None, budget: int = 2**22
) -> Tensor:
    """Indices ``[B, k]`` of the k rows of ``reference`` ``[N, d]`` nearest to each row of ``query`` ``[B, d]``,
    nearest first, by the squared distance over the coordinates that ``observed`` ``[B, d]`` (bool) marks for each
    query row (all of them when None):

        d_bn = sum_j o_bj (q_bj - r_nj)^2 = sum_j o_bj q_bj^2 - 2 sum_j o_bj q_bj r_nj + sum_j o_bj r_nj^2,

    three matrix products, so every query row may observe its own coordinates. Distances are computed for blocks
    of about ``budget / B`` reference rows at a time and each block's k nearest merged with the best so far, so
    memory stays about ``budget`` distances (16 MiB by default) plus O(B k), whatever N and B.
    """
    k = min(k, reference.shape[0])
    if observed is not None:  # unobserved entries may be NaN, and 0 * NaN is NaN
        query = torch.where(observed, query, torch.zeros_like(query))
    weight = torch.ones_like(query) if observed is None else observed.to(query.dtype)
    q_term = (weight * query * query).sum(-1, keepdim=True)  # [B, 1]
    block = max(k, budget // max(1, query.shape[0]))
    best_d = torch.empty((query.shape[0], 0), device=query.device, dtype=query.dtype)
    best_i = torch.empty((query.shape[0], 0), dtype=torch.long, device=query.device)
    for lo in range(0, reference.shape[0], block):
        ref = reference[lo : lo + block].to(query.dtype)
        d = q_term - 2.0 * (weight * query) @ ref.T + weight @ (ref * ref).T
        d, i = d.topk(min(k, ref.shape[0]), dim=1, largest=False)
        d, i = torch.cat([best_d, d], 1), torch.cat([best_i, lo + i], 1)
        best_d, order = d.topk(min(k, d.shape[1]), dim=1, largest=False)
        best_i = i.gather(1, order)
    return best_i


def prior_starts(x_obs: Tensor, missing: Tensor, dz: int, n: int, generator: torch.Generator | None) -> ChainStarts:
    """x_m and z from N(0, I) for n chains per datum: one draw ``[B, n, dx + dz]`` whose observed slots are then
    overwritten by x_o, or, with nothing missing (posterior inference), one draw of z ``[B, n, dz]`` alone."""
    b, dx = x_obs.shape
    drawn = dx if bool(missing.any()) else 0
    y = torch.randn(b, n, drawn + dz, generator=generator, device=x_obs.device, dtype=x_obs.dtype)
    x = x_obs.unsqueeze(1).expand(b, n, dx)
    return ChainStarts(torch.where(missing.unsqueeze(1), y[..., :drawn], x) if drawn else x, y[..., drawn:])


def neighbour_starts(
    x_obs: Tensor,
    missing: Tensor,
    n: int,
    train: Tensor,
    store: Tensor | None = None,
    encoder: nn.Module | None = None,
    dz: int = 0,
    generator: torch.Generator | None = None,
    skip: int = 0,
) -> ChainStarts:
    """n chains per datum started at the training data nearest in the observed coordinates (module docstring).

    Args:
        x_obs: data ``[B, dx]``, standardised; entries where ``missing`` is True are ignored (they may be NaN).
        missing: ``[B, dx]`` bool, True for an unobserved coordinate (all False for posterior inference).
        n: S, chains per datum.
        train: the training data ``[N, dx]``, standardised.
        store: the persistent particles ``[N, K', dz]`` of the training data (row i: datum i), or None.
        encoder: without a store, an amortised posterior (``encoder(x) -> (mu, log sigma)``, each ``[..., dz]``)
            whose draw z = mu + sigma eps at the completed point starts z; without either, z ~ N(0, I).
        dz: the latent dimension (read from ``store`` when there is one).
        generator: source of the encoder's or the prior's draws of z.
        skip: start after the first ``skip`` stored particles (a second set disjoint from a first of ``skip``).
    """
    per_datum = 1 if store is None else store.shape[1]
    need = -(-(skip + n) // per_datum)
    if need > train.shape[0]:
        raise ValueError(
            f"{skip + n} starting points need {need} neighbours but there are {train.shape[0]} training data."
        )
    nearest = nearest_rows(x_obs, train.to(x_obs), need, ~missing)
    position = torch.arange(skip, skip + n, device=x_obs.device)
    neighbour = nearest[:, torch.div(position, per_datum, rounding_mode="floor")]  # [B, n]
    x0 = torch.where(missing.unsqueeze(1), train.to(x_obs)[neighbour], x_obs.unsqueeze(1))
    if store is not None:
        z0 = store.to(x_obs)[neighbour, position % per_datum]
    elif encoder is not None:
        with torch.no_grad():
            mu, log_sigma = encoder(x0)
        z0 = mu + log_sigma.exp() * torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    else:
        z0 = torch.randn(*neighbour.shape, dz, generator=generator, device=x_obs.device, dtype=x_obs.dtype)
    return ChainStarts(x0, z0)


def posterior_starts(
    x: Tensor, n: int, train: Tensor, store: ParticleStore | None, encoder: nn.Module | None = None,
    generator: torch.Generator | None = None,
) -> Tensor | None:
    """Starting z ``[B, n, dz]`` of n posterior chains per datum x ``[B, dx]`` (standardised, nothing missing).

    With a store: ``neighbour_starts`` over the training data this rank owns (``train`` ``[N, dx]`` is the whole
    split), the rows of the store read only for the data nearest to some x (a host-kept store stays on the
    host); when the shard holds fewer than n particles the starts repeat. Without one: an amortised ``encoder``'s
    draws at x. Without either: None (the caller starts at N(0, I)).
    """
    if store is not None:
        owned, per_datum = store.owned, store.n_particles
        available = min(n, len(owned) * per_datum)
        shard = train[owned].to(x)
        near = nearest_rows(x, shard, -(-available // per_datum)).unique()  # each datum's nearest, all owned
        particles = store.get(owned[near.cpu()]).to(x.device)
        starts = neighbour_starts(x, torch.zeros_like(x, dtype=torch.bool), available, shard[near], particles)
        return starts.z.repeat(1, -(-n // available), 1)[:, :n]
    if encoder is not None:
        with torch.no_grad():
            mu, log_sigma = encoder(x)
        noise = torch.randn(x.shape[0], n, mu.shape[-1], generator=generator, device=mu.device, dtype=mu.dtype)
        return mu.unsqueeze(1) + log_sigma.exp().unsqueeze(1) * noise
    return None
