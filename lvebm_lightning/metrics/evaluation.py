"""A model's evaluation (docs/design.md section 5) from its energy and sample clouds, in the data's own units.

Shared by the validation / test callback (``callbacks.metrics``) and by ``lvebm-eval``
(``lvebm_lightning.inference.evaluation``), so that both compute the same numbers from the same inputs:

- ``held_out_rows``: the n held-out rows that every W2 of a split is measured against.
- ``floor_distances``: the W2 floor at that size, the mean and spread over ``FLOOR_PAIRS`` pairs of independent
  data samples (``reference_pairs`` or ``halving_pairs``); it depends on the data alone, so callers compute it
  once per split.
- ``sample_distances``: W2 of the model's samples and of the negative pool to the held-out rows, the ratio to the
  floor's mean, and sliced W2 when dx > 3; each W2 subsamples with its own fixed generator, so equal inputs give
  equal values.
- ``quadrature``: log Z on a box that covers the training data and the model's samples (dx + dz <= 3), and
  ``data_nll``: the exact -log p(x) per datum in data units, -log p_std(s(x)) + sum_d log sigma_d.
- ``posterior_bounds``: the ELBO and importance-weighted bound of each datum from the posterior strategy's
  evaluation particles, and for the amortised encoder the ELBO of its own exact density.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lvebm_lightning.energies.base import Energy
from lvebm_lightning.metrics.elbo import elbo
from lvebm_lightning.metrics.quadrature import choose_box, log_marginal, log_partition
from lvebm_lightning.metrics.wasserstein import sliced_w2, w2

QUADRATURE_MAX_DIM = 3
"""Exact likelihood by quadrature only when dx + dz <= 3 (the grid costs n_points^(dx + dz) energies)."""


FLOOR_PAIRS = 5
"""Independent pairs of data samples whose W2 give the floor's mean and spread."""


def held_out_rows(data: Tensor, n: int) -> Tensor:
    """The n rows ``[n, dx]`` of held-out data ``[N, dx]`` that every W2 of the split is measured against: all of
    them in order when N <= n, else a fixed draw without replacement (seed 0), the same at every evaluation."""
    if len(data) <= n:
        return data
    return data[torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:n]]


def reference_pairs(held: Tensor, reference: Tensor, n_pairs: int = FLOOR_PAIRS) -> list[tuple[Tensor, Tensor]]:
    """Pairs (held, R_i) for the floor: the held-out rows ``[n, dx]`` against n rows R_i of ``reference``
    ``[M, dx]``, data of the same law drawn independently of them (the training split). The R_i are disjoint
    blocks of one permutation (seed 1) when M >= n_pairs n, else independent draws without replacement.

    W2(held, R_i) is what a model drawing exact samples would score against these very rows, so the pairs' mean
    and spread are the floor of the model's W2 and its noise."""
    n = len(held)
    if len(reference) >= n_pairs * n:
        blocks = torch.randperm(len(reference), generator=torch.Generator().manual_seed(1))[: n_pairs * n]
        return [(held, reference[block]) for block in blocks.view(n_pairs, n)]
    draws = [torch.randperm(len(reference), generator=torch.Generator().manual_seed(1 + i))[:n]
             for i in range(n_pairs)]
    return [(held, reference[index]) for index in draws]


def halving_pairs(x: Tensor, n_pairs: int = FLOOR_PAIRS) -> list[tuple[Tensor, Tensor]]:
    """Pairs of disjoint halves ``[N // 2, dx]`` of ``x`` ``[N, dx]``, one random halving per pair (seed 3 + i),
    for data with no independent reference sample; the first pair's first half is the held-out side of W2."""
    half = len(x) // 2
    orders = [torch.randperm(len(x), generator=torch.Generator().manual_seed(3 + i)) for i in range(n_pairs)]
    return [(x[order[:half]], x[order[half : 2 * half]]) for order in orders]


def floor_distances(pairs: list[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """The W2 floor: ``w2_floor``, the mean of the exact W2 of each pair of equal-size data samples, and
    ``w2_floor_sd``, their standard deviation (with Bessel's correction; 0 for a single pair)."""
    values = torch.stack([w2(a, b, max(len(a), len(b))) for a, b in pairs])
    sd = values.std() if len(values) > 1 else torch.zeros((), dtype=values.dtype)
    return {"w2_floor": values.mean(), "w2_floor_sd": sd}


def sample_distances(
    model_x: Tensor, held: Tensor, floor: dict[str, Tensor], pool_x: Tensor | None = None
) -> dict[str, Tensor]:
    """W2 (``w2``) of the model's samples and of the pool (``w2_pool``) to the held-out rows ``held`` ``[n, dx]``,
    each side on at most n points, ``w2_ratio`` = w2 / w2_floor (the floor's mean), the ``floor`` entries
    themselves and, when dx > 3, ``sliced_w2``; all clouds ``[*, dx]`` in data units."""
    n = len(held)
    out = {"w2": w2(model_x, held, n, torch.Generator().manual_seed(0)), **floor}
    if pool_x is not None:
        out["w2_pool"] = w2(pool_x, held, n, torch.Generator().manual_seed(2))
    if model_x.shape[1] > QUADRATURE_MAX_DIM:
        out["sliced_w2"] = sliced_w2(model_x, held)
    out["w2_ratio"] = out["w2"] / floor["w2_floor"]
    return out


def quadrature(
    energy: Energy,
    dx: int,
    dz: int,
    train_x: Tensor,
    model_xz: Tensor,
    n_points: int,
    margin: float,
    max_edge_mass: float = 1e-3,
    widenings: int = 3,
) -> dict[str, Any]:
    """log Z on a box over training data ``[n, dx]`` and model pairs ``[m, dx + dz]`` (standardised units), the
    box widened by ``margin`` of its range on each side: ``{"log_z", "edge_mass", "lo", "hi", "n_points"}``.
    The data's z extent is taken from the model's z (data have none). Samples can miss the tails, so while more
    than ``max_edge_mass`` of exp(-E) lies in the outer cells the box grows 1.5-fold, at most ``widenings`` times;
    the final edge mass is returned for the user to see."""
    x_cover = torch.cat([train_x, model_xz[:, :dx]])
    z_cover = model_xz[:, dx:]
    xz_cover = torch.cat([x_cover, torch.cat([z_cover, z_cover[: len(train_x)]])], dim=-1)
    lo, hi = choose_box(xz_cover.to(torch.float64), margin=margin)
    lo, hi = lo.to(torch.float32), hi.to(torch.float32)
    result = log_partition(energy, dx, dz, lo, hi, n_points)
    for _ in range(widenings):
        if result.edge_mass <= max_edge_mass:
            break
        centre, half = (hi + lo) / 2, (hi - lo) / 2
        lo, hi = centre - 1.5 * half, centre + 1.5 * half
        result = log_partition(energy, dx, dz, lo, hi, n_points)
    return {"log_z": result.log_z, "edge_mass": result.edge_mass, "lo": lo, "hi": hi, "n_points": n_points}


def data_nll(energy: Energy, x_std: Tensor, dz: int, box: dict[str, Any], log_det: Tensor | float) -> Tensor:
    """-log p(x) ``[B]`` (float64) in data units for standardised data ``[B, dx]``, with ``box`` from
    ``quadrature`` and ``log_det`` = sum_d log sigma_d of the standardisation."""
    dx = x_std.shape[-1]
    log_p = log_marginal(energy, x_std, dz, box["lo"][dx:], box["hi"][dx:], box["n_points"]) - box["log_z"]
    return -log_p + log_det


def posterior_bounds(
    module: Any, x_std: Tensor, index: Tensor | None, log_z: float, n_samples: int,
    generator: Callable[[int], torch.Generator], fresh_chains: Callable[[Tensor, int], Tensor],
) -> dict[str, Tensor]:
    """Per-datum bounds on log p_std(x_b) ``[B]`` (float64, standardised units) for data ``[B, dx]``.

    ``elbo`` and ``iw_bound`` come from the particle mixture q_b around the strategy's evaluation particles
    (``module.posterior.evaluation_particles``: the stored particles of training data ``index``, or fresh chains
    ``fresh_chains(x, K)`` for new data, or the strategy's own draws) with S = ``n_samples`` draws; for a trainable
    posterior (the amortised encoder) ``elbo_encoder`` is the ELBO of its own exact density. ``generator(key)``
    gives the random stream of each draw (key 1: particles, 4: the mixture, 7: the encoder's density).
    """
    posterior, energy = module.posterior, module.energy
    particles = posterior.evaluation_particles(energy, x_std, index, generator(1), fresh_chains)
    bounds = elbo(energy, x_std, particles, log_z, n_samples, generator(4))
    out = {"elbo": bounds.elbo, "iw_bound": bounds.iw_bound}
    if posterior.trainable:  # the encoder's exact density: its ELBO needs no bandwidth
        out["elbo_encoder"] = posterior.elbo(energy, x_std, n_samples, generator(7)) - log_z
    return out
