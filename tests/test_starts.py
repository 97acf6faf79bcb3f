"""Chain starts: neighbours by the observed coordinates only, their missing coordinates, stored particles and the
fallbacks without a store."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lvebm_lightning.particles.starts import nearest_rows, neighbour_starts, prior_starts


def brute_nearest(query: Tensor, reference: Tensor, k: int, observed: Tensor) -> Tensor:
    """Row by row: Euclidean distance over that row's observed coordinates only."""
    rows = [torch.cdist(q[o][None], reference[:, o]).topk(k, largest=False).indices[0] for q, o in zip(query, observed)]
    return torch.stack(rows)


def test_nearest_rows_measures_each_row_over_its_own_observed_coordinates():
    gen = torch.Generator().manual_seed(0)
    query, reference = torch.randn(30, 6, generator=gen, dtype=torch.float64), torch.randn(500, 6, generator=gen,
                                                                                          dtype=torch.float64)
    observed = torch.rand(30, 6, generator=gen) < 0.6
    observed[:, 0] = True  # every row observes something
    query[~observed] = float("nan")  # unobserved entries may be NaN
    expected = brute_nearest(query, reference, 5, observed)
    assert torch.equal(nearest_rows(query, reference, 5, observed), expected)
    # Blocks of a few reference rows at a time, merged, give the same answer.
    assert torch.equal(nearest_rows(query, reference, 5, observed, budget=30 * 7), expected)
    full = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    assert torch.equal(nearest_rows(full, reference, 3), torch.cdist(full, reference).topk(3, largest=False).indices)


def test_neighbours_are_found_in_the_observed_coordinates_only():
    """Training datum 0 matches the query where it is observed and is far off where it is not; datum 1 is close
    everywhere but a little off in the observed coordinates. The start takes datum 0, and its missing values."""
    train = torch.tensor([[1.0, 2.0, 40.0, -40.0], [1.1, 2.1, 3.0, 4.0], [9.0, 9.0, 9.0, 9.0]])
    x = torch.tensor([[1.0, 2.0, float("nan"), float("nan")]])
    missing = torch.isnan(x)
    store = torch.tensor([[[10.0, 11.0]], [[20.0, 21.0]], [[30.0, 31.0]]])  # K' = 1 particle of dz = 2 each
    starts = neighbour_starts(x, missing, 2, train, store)
    assert torch.equal(starts.x[0], torch.tensor([[1.0, 2.0, 40.0, -40.0], [1.0, 2.0, 3.0, 4.0]]))
    assert torch.equal(starts.z[0], torch.tensor([[10.0, 11.0], [20.0, 21.0]]))
    # Judged on every coordinate (posterior inference, nothing missing) datum 1 would be nearest.
    assert nearest_rows(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), train, 1).item() == 1


def test_all_stored_particles_of_the_nearest_come_first_and_a_second_set_takes_the_next():
    """K' = 2: chain s starts at particle s mod 2 of the (s // 2)-th nearest; ``skip`` continues the same list."""
    train = torch.arange(5, dtype=torch.float64).unsqueeze(1) * torch.ones(1, 2, dtype=torch.float64)
    store = torch.arange(10, dtype=torch.float64).view(5, 2, 1)  # datum i holds particles 2i, 2i + 1
    x = torch.tensor([[0.1, float("nan")]], dtype=torch.float64)  # nearest: data 0, 1, 2, ...
    missing = torch.isnan(x)
    first = neighbour_starts(x, missing, 3, train, store)
    second = neighbour_starts(x, missing, 3, train, store, skip=3)
    assert first.z.flatten().tolist() == [0.0, 1.0, 2.0]
    assert second.z.flatten().tolist() == [3.0, 4.0, 5.0]
    assert first.x[0, :, 1].tolist() == [0.0, 0.0, 1.0] and second.x[0, :, 1].tolist() == [1.0, 2.0, 2.0]
    assert torch.equal(first.x[..., 0], torch.full((1, 3), 0.1, dtype=torch.float64))


class ShiftEncoder(nn.Module):
    """q(z | x) = N(sum(x) (1, 1), tiny): its draws are the completed point's coordinate sum."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu = x.sum(-1, keepdim=True).expand(*x.shape[:-1], 2)
        return mu, torch.full_like(mu, -40.0)


def test_without_a_store_z_comes_from_the_encoder_at_the_completed_point_else_from_the_prior():
    train = torch.tensor([[0.0, 5.0], [3.0, -7.0]])
    x = torch.tensor([[0.2, float("nan")], [float("nan"), -6.0]])
    missing = torch.isnan(x)
    starts = neighbour_starts(x, missing, 1, train, encoder=ShiftEncoder(), dz=2)
    # datum 0 completes to (0.2, 5.0), datum 1 to (3.0, -6.0): the encoder sees the neighbour's missing values
    torch.testing.assert_close(starts.z[:, 0], torch.tensor([[5.2, 5.2], [-3.0, -3.0]]))
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    plain = neighbour_starts(x, missing, 3, train.repeat(2, 1), dz=2, generator=gen_a)
    assert torch.equal(plain.z, torch.randn(2, 3, 2, generator=gen_b))
    latent_free = neighbour_starts(x, missing, 1, train)
    assert latent_free.z.shape == (2, 1, 0) and torch.equal(latent_free.x[:, 0], torch.tensor([[0.2, 5.0],
                                                                                               [3.0, -6.0]]))


def test_prior_starts_keep_the_observed_coordinates():
    x = torch.tensor([[1.5, float("nan"), -2.0]])
    starts = prior_starts(x, torch.isnan(x), 2, 4, torch.Generator().manual_seed(0))
    assert starts.x.shape == (1, 4, 3) and starts.z.shape == (1, 4, 2)
    assert torch.equal(starts.x[0, :, 0], torch.full((4,), 1.5)) and bool(torch.isfinite(starts.x).all())
    assert starts.x[0, :, 1].unique().numel() == 4
