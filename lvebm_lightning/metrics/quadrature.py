"""Exact log-likelihood in low dimension (dx + dz <= 3) by midpoint quadrature on a box.

With p(x, z) = exp(-E(x, z)) / Z and a box [lo, hi] that holds (almost) all of the mass,

    log Z    ~= logsumexp_g(-E(y_g)) + log |cell|                     (y_g = (x_g, z_g) over the joint grid)
    log p(x) ~= logsumexp_g(-E(x, z_g)) + log |cell_z| - log Z         (z_g over the z part of the grid)

The midpoint rule on a box of n_per_dim cells a side converges like the trapezoid rule: geometrically in
n_per_dim for a smooth density that vanishes at the box edges. The cost is n_per_dim^(dx + dz) energy
evaluations. The mass in the outermost layer of cells is reported (`edge_mass`) so a box that cuts the
density is seen, not silently trusted.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from lvebm_lightning.energies.base import Energy


@dataclass
class QuadratureResult:
    """log Z of the joint density on the box, and the fraction of its mass in the box's outermost cells."""

    log_z: float
    edge_mass: float


def batched_energy(energy: Energy, x: Tensor, z: Tensor, batch_size: int) -> Tensor:
    """E(x, z) for x [N, dx], z [N, dz] in chunks of `batch_size` rows, without autograd; float64 [N]."""
    with torch.no_grad():
        chunks = [
            energy(xc, zc).to(torch.float64) for xc, zc in zip(x.split(batch_size), z.split(batch_size))
        ]
    return torch.cat(chunks) if chunks else x.new_zeros(0, dtype=torch.float64)


def _grid_cells(lo: Tensor, hi: Tensor, n_per_dim: int, flat_index: Tensor) -> tuple[Tensor, Tensor]:
    """Midpoints [G, d] and integer cell indices [G, d] of the cells numbered `flat_index` [G] (row-major)."""
    d = lo.shape[0]
    strides = n_per_dim ** torch.arange(d - 1, -1, -1, device=flat_index.device)
    index = flat_index.unsqueeze(-1) // strides % n_per_dim
    return lo + (index.to(lo.dtype) + 0.5) * (hi - lo) / n_per_dim, index


def _log_cell_volume(lo: Tensor, hi: Tensor, n_per_dim: int) -> float:
    """log |cell| = sum_j log((hi_j - lo_j) / n_per_dim), in float64 (0 for an empty box: d = 0)."""
    return float(torch.log((hi - lo).to(torch.float64) / n_per_dim).sum())


def _check_box(lo: Tensor, hi: Tensor, n_per_dim: int) -> None:
    """Raise early on a malformed box: lo, hi must be [d] with hi > lo, and n_per_dim >= 1."""
    if lo.ndim != 1 or lo.shape != hi.shape:
        raise ValueError(
            f"lo and hi must be [d] tensors of one shape, got {tuple(lo.shape)} and {tuple(hi.shape)}"
        )
    if not bool((hi > lo).all()):
        raise ValueError("the box needs hi > lo in every dimension; widen it (see choose_box)")
    if n_per_dim < 1:
        raise ValueError(f"n_per_dim must be >= 1, got {n_per_dim}")


def make_grid(lo: Tensor, hi: Tensor, n_per_dim: int) -> tuple[Tensor, float]:
    """Midpoint grid on the box [lo, hi] (lo, hi: [d]) with `n_per_dim` cells a side.

    Returns the cell midpoints [n_per_dim^d, d] in row-major order (last dimension fastest), in the dtype and
    on the device of `lo`, and log |cell| = sum_j log((hi_j - lo_j) / n_per_dim). For d = 0 the grid is the
    single empty point and log |cell| = 0, so that integrating over zero dimensions is evaluation.
    """
    _check_box(lo, hi, n_per_dim)
    n_points = n_per_dim ** lo.shape[0]
    points, _ = _grid_cells(lo, hi, n_per_dim, torch.arange(n_points, device=lo.device))
    return points, _log_cell_volume(lo, hi, n_per_dim)


def log_partition(
    energy: Energy, dx: int, dz: int, lo: Tensor, hi: Tensor, n_per_dim: int = 100, batch_size: int = 65536
) -> QuadratureResult:
    """log Z = log int exp(-E(x, z)) dx dz over the box [lo, hi] ([dx + dz]: x first, then z), by quadrature.

    The grid is built chunk by chunk (`batch_size` cells at a time, in the dtype and on the device of `lo`),
    so memory does not grow with n_per_dim^(dx + dz). Partial sums are combined with logsumexp in float64.
    `edge_mass` is the share of the integral from cells touching the box's boundary; if it is not tiny the box
    cuts the density and log Z is underestimated.
    """
    _check_box(lo, hi, n_per_dim)
    if lo.shape[0] != dx + dz:
        raise ValueError(
            f"lo and hi must have dx + dz = {dx + dz} entries (x first, then z), got {lo.shape[0]}"
        )
    log_cell = _log_cell_volume(lo, hi, n_per_dim)
    n_points = n_per_dim ** (dx + dz)
    log_total = torch.tensor(-torch.inf, dtype=torch.float64, device=lo.device)
    log_edge = torch.tensor(-torch.inf, dtype=torch.float64, device=lo.device)
    for flat_index in torch.arange(n_points, device=lo.device).split(batch_size):
        points, index = _grid_cells(lo, hi, n_per_dim, flat_index)
        log_density = -batched_energy(energy, points[:, :dx], points[:, dx:], batch_size)
        on_edge = ((index == 0) | (index == n_per_dim - 1)).any(dim=-1)
        log_total = torch.logaddexp(log_total, log_density.logsumexp(0))
        log_edge = torch.logaddexp(log_edge, log_density[on_edge].logsumexp(0))
    return QuadratureResult(log_z=float(log_total) + log_cell, edge_mass=float((log_edge - log_total).exp()))


def log_marginal(
    energy: Energy,
    x: Tensor,
    dz: int,
    z_lo: Tensor,
    z_hi: Tensor,
    n_per_dim: int = 100,
    batch_size: int = 65536,
) -> Tensor:
    """log int exp(-E(x_b, z)) dz over the box [z_lo, z_hi] ([dz]) for each row of x [B, dx]; float64 [B].

    Midpoint quadrature with n_per_dim^dz cells; for dz = 0 it is -E(x, z) with z the empty [B, 0] tensor.
    Work is chunked over (datum, cell) pairs so that at most `batch_size` pairs are evaluated at once.
    """
    if z_lo.shape != (dz,):
        raise ValueError(f"z_lo and z_hi must be [dz] = [{dz}] tensors, got {tuple(z_lo.shape)}")
    z_grid, log_cell = make_grid(z_lo.to(x), z_hi.to(x), n_per_dim)
    rows_per_chunk = max(1, batch_size // z_grid.shape[0])
    results = []
    for x_rows in x.split(rows_per_chunk):
        log_integral = torch.full((x_rows.shape[0],), -torch.inf, dtype=torch.float64, device=x.device)
        for z_cells in z_grid.split(batch_size):
            pairs_x = x_rows.repeat_interleave(z_cells.shape[0], dim=0)
            pairs_z = z_cells.repeat(x_rows.shape[0], 1)
            log_density = -batched_energy(energy, pairs_x, pairs_z, batch_size).view(x_rows.shape[0], -1)
            log_integral = torch.logaddexp(log_integral, log_density.logsumexp(dim=1))
        results.append(log_integral + log_cell)
    return torch.cat(results)


def choose_box(samples: Tensor, margin: float = 0.5) -> tuple[Tensor, Tensor]:
    """A box [lo, hi] ([d] each) around `samples` [n, d], widened by `margin` times the range on each side.

        lo = min - margin * (max - min),    hi = max + margin * (max - min)

    Pass data and model samples together (concatenated, with z columns for the joint box) so that the box
    covers both; then check `QuadratureResult.edge_mass` and widen `margin` if it is not tiny.
    """
    if samples.ndim != 2 or samples.shape[0] < 2:
        raise ValueError(f"choose_box needs samples [n >= 2, d], got shape {tuple(samples.shape)}")
    low, high = samples.min(dim=0).values, samples.max(dim=0).values
    spread = high - low
    if not bool((spread > 0).all()):
        raise ValueError(
            "the samples have zero spread in some dimension; pass more varied samples or set the box"
        )
    return low - margin * spread, high + margin * spread
