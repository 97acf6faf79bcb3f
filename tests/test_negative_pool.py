"""NegativePool's draws: batches without replacement that walk through one permutation of the rank's rows, so a
step costs O(B) and every row is drawn once per floor(M_r / B) steps; a checkpoint continues the same draws."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from callbacks.negative_pool import NegativePool

BATCH = 8


def materialised(pool_size: int, rank: int = 0, world_size: int = 1, state: dict | None = None) -> NegativePool:
    pool = NegativePool(pool_size=pool_size, reinit_prob=0.5)
    if state is not None:
        pool.load_state_dict(state)
    module = SimpleNamespace(negative_batch_size=BATCH, device=torch.device("cpu"), dx=2, dz=1, seed=0)
    pool.materialise(module, rank, world_size)
    return pool


@pytest.mark.parametrize("pool_size, rank, world_size", [(64, 0, 1), (67, 1, 2), (21, 0, 1)])
def test_each_cycle_of_draws_takes_every_row_once(pool_size, rank, world_size, monkeypatch):
    pool = materialised(pool_size, rank, world_size)
    rows = len(pool.owned)
    per_cycle = rows // BATCH  # the last rows mod B of each permutation are skipped
    permutations = []
    original = torch.randperm
    monkeypatch.setattr(torch, "randperm", lambda *a, **k: permutations.append(a) or original(*a, **k))
    for _ in range(3):
        cycle = [pool.draw(BATCH)[0].tolist() for _ in range(per_cycle)]
        assert all(len(set(idx)) == BATCH for idx in cycle)  # without replacement within a batch
        drawn = [i for idx in cycle for i in idx]
        assert len(set(drawn)) == len(drawn) == per_cycle * BATCH  # and within a cycle
        assert set(drawn) <= set(range(rows))  # local rows of this rank's shard
        if rows % BATCH == 0:
            assert sorted(drawn) == list(range(rows))
    assert len(permutations) == 3  # one O(M_r) permutation per cycle, not one per draw


def test_every_row_is_equally_likely_when_batches_do_not_divide_the_shard():
    pool = materialised(21)  # 2 batches of 8 per permutation, 5 rows skipped each time
    counts = torch.zeros(21)
    for _ in range(2000):
        counts[pool.draw(BATCH)[0]] += 1
    # Each row's count is Binomial(1000 cycles, p = 16/21): mean 762, sd 13.5; 6 sd for the largest of 21 rows.
    expected = 2000 * BATCH / 21
    assert (counts - expected).abs().max() < 6 * (1000 * (16 / 21) * (5 / 21)) ** 0.5


@pytest.mark.parametrize("stop", [0, 3, 8])  # before any draw, mid-permutation, at a permutation's end
def test_a_restored_pool_continues_the_same_draws(stop):
    uninterrupted = materialised(64)
    reference = [uninterrupted.draw(BATCH) for _ in range(stop + 12)]

    first = materialised(64)
    for _ in range(stop):
        first.draw(BATCH)
    first._trainer = SimpleNamespace(global_step=stop)
    resumed = materialised(64, state=first.state_dict())
    for idx, xz in reference[stop:]:
        got_idx, got_xz = resumed.draw(BATCH)
        assert torch.equal(got_idx, idx) and torch.equal(got_xz, xz)


def test_a_pool_resumed_under_another_number_of_ranks_starts_a_fresh_order():
    first = materialised(64)
    first.draw(BATCH)
    first._trainer = SimpleNamespace(global_step=1)
    resumed = materialised(64, rank=1, world_size=2, state=first.state_dict())
    assert resumed.cursor == 0 and resumed.order.numel() == 0
    assert sorted(i for _ in range(4) for i in resumed.draw(BATCH)[0].tolist()) == list(range(32))


@pytest.mark.parametrize("rho", [0.0, 0.05, 0.3, 1.0])
def test_a_fraction_rho_of_each_drawn_batch_is_re_initialised_from_the_init_law(rho):
    """Each drawn row is replaced by a fresh N(0, s^2 I) draw with probability rho, independently: over n rows the
    count of replaced rows is Binomial(n, rho) (5 sd allowed), and the replaced rows' variance is s^2 (chi-square:
    5 sd of s^2 sqrt(2 / (3 n_replaced)) over the 3 coordinates)."""
    scale, draws = 1.7, 400
    pool = NegativePool(pool_size=64, reinit_prob=rho, init_scale=scale)
    pool.materialise(SimpleNamespace(negative_batch_size=BATCH, device=torch.device("cpu"), dx=2, dz=1, seed=0), 0, 1)
    replaced = []
    for _ in range(draws):
        idx, xz = pool.draw(BATCH)
        fresh = (xz != pool.pool[idx]).all(dim=-1)  # a fresh draw equals the old row in no coordinate
        replaced.append(xz[fresh])
        pool.write(idx, xz)
    rows = torch.cat(replaced)
    n = draws * BATCH
    assert abs(rows.shape[0] - rho * n) <= 5 * (n * rho * (1 - rho)) ** 0.5
    if rows.shape[0] > 100:
        assert abs(float(rows.var()) / scale**2 - 1) < 5 * (2 / rows.numel()) ** 0.5
