"""Wasserstein-2 distances between two point clouds (model samples against held-out data).

For empirical measures mu_n = (1/n) sum_i delta_{a_i} and nu_m = (1/m) sum_j delta_{b_j},

    W2(mu_n, nu_m)^2 = min_{P in U(n, m)} sum_ij P_ij |a_i - b_j|^2,

with U(n, m) the couplings of uniform weights. Two independent samples of the *same* distribution are at a
positive W2 that shrinks slowly with n (about n^(-1/d) in d >= 3 dimensions), so a model's W2 means little
without the noise floor `w2_floor` beside it, computed from two data samples of the same size.
"""

import ot
import torch
from torch import Tensor


def _subsample(samples: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
    """Return `n` rows of `samples` [N, d] drawn without replacement (all of them, in order, if N <= n)."""
    if samples.shape[0] <= n:
        return samples
    index = torch.randperm(
        samples.shape[0], generator=generator, device=generator.device if generator else None
    )
    return samples[index[:n].to(samples.device)]


def _as_cloud(samples: Tensor, name: str) -> Tensor:
    """Check a point cloud is [N, d] with N >= 1 and return it detached on the CPU in float64."""
    if samples.ndim != 2 or samples.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty [n_samples, dim] tensor, got shape {tuple(samples.shape)}"
        )
    return samples.detach().to(device="cpu", dtype=torch.float64)


def w2(a: Tensor, b: Tensor, max_samples: int = 2000, generator: torch.Generator | None = None) -> Tensor:
    """Exact W2 between the empirical measures of `a` [n, d] and `b` [m, d], as a float64 scalar tensor.

    Solves the transport linear programme (`ot.emd2`) with uniform weights and squared Euclidean cost
    M_ij = |a_i - b_j|^2 in float64, then takes the square root. Each side is first subsampled without
    replacement to at most `max_samples` points (the solver costs about n^3), using `generator` so that the
    value is reproducible.
    """
    a = _subsample(_as_cloud(a, "a"), max_samples, generator)
    b = _subsample(_as_cloud(b, "b"), max_samples, generator)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same dimension, got {a.shape[1]} and {b.shape[1]}")
    weights_a = torch.full((a.shape[0],), 1.0 / a.shape[0], dtype=torch.float64)
    weights_b = torch.full((b.shape[0],), 1.0 / b.shape[0], dtype=torch.float64)
    # A generous iteration cap: a simplex stopped early returns a non-optimal (too large) cost and only warns.
    cost = ot.emd2(weights_a, weights_b, ot.dist(a, b), numItermax=10_000_000)
    return cost.clamp_min(0.0).sqrt()


def sliced_w2(a: Tensor, b: Tensor, n_projections: int = 200, seed: int = 0) -> Tensor:
    """Monte-Carlo sliced W2 between the empirical measures of `a` [n, d] and `b` [m, d] (float64 scalar).

        SW2(mu, nu)^2 = E_{theta ~ U(S^{d-1})} W2(theta_# mu, theta_# nu)^2,

    estimated with `n_projections` random directions drawn from a private generator seeded with `seed`
    (so the global torch generator is left alone). Each 1-D problem is solved exactly by sorting, so no
    subsampling is needed. Projections are 1-Lipschitz, hence SW2 <= W2 for the same samples.
    """
    a, b = _as_cloud(a, "a"), _as_cloud(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same dimension, got {a.shape[1]} and {b.shape[1]}")
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(a.shape[1], n_projections, generator=generator, dtype=torch.float64)
    directions = directions / directions.norm(dim=0, keepdim=True)
    return ot.sliced_wasserstein_distance(a, b, p=2, projections=directions)


def w2_floor(data_a: Tensor, data_b: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """Noise floor of W2: the exact W2 between two independent data samples, both subsampled to size `n`.

    `data_a` [N_a, d] and `data_b` [N_b, d] must be independent draws of the same distribution (for example
    two disjoint halves of the held-out split) with N_a, N_b >= n. Report it next to `w2(model, data,
    max_samples=n)`: a model whose W2 is close to this floor is indistinguishable from the data at that size.
    """
    if min(data_a.shape[0], data_b.shape[0]) < n:
        raise ValueError(
            f"w2_floor needs at least n={n} rows on each side, got {data_a.shape[0]} and {data_b.shape[0]}; "
            "lower n or pass larger held-out samples"
        )
    return w2(data_a, data_b, max_samples=n, generator=generator)
