"""The W2 floor: mean and spread over independent pairs of equal-size data samples (metrics/evaluation.py).

A model that draws exact samples scores, against the held-out rows, a W2 from the same law as each floor pair's
W2 (the held-out side is the same rows, the other side an independent sample of the same size), so its W2 lies
within the floor's spread of the floor's mean: with 5 pairs, (w2 - mean) / (sd sqrt(1 + 1/5)) follows Student's
t with 4 degrees of freedom, and |t| > 5 has probability below 1%.
"""

import math

import torch

from lvebm_lightning.metrics import w2
from lvebm_lightning.metrics.evaluation import (
    FLOOR_PAIRS,
    floor_distances,
    halving_pairs,
    held_out_rows,
    reference_pairs,
    sample_distances,
)


def _mixture(n: int, seed: int) -> torch.Tensor:
    """Two well-separated 2-D Gaussians, 30% / 70%: a bimodal law like the double well's."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.where(torch.rand(n, generator=g) < 0.3, -2.0, 2.0)
    return torch.stack([centre, torch.zeros(n)], 1) + 0.5 * torch.randn(n, 2, generator=g)


def _rows(x: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(r.tolist()) for r in x}


def test_held_out_rows_are_all_rows_or_a_fixed_draw():
    data = _mixture(300, 0)
    assert torch.equal(held_out_rows(data, 300), data) and torch.equal(held_out_rows(data, 500), data)
    drawn = held_out_rows(data, 100)
    assert drawn.shape == (100, 2) and torch.equal(drawn, held_out_rows(data, 100))
    assert _rows(drawn) <= _rows(data) and len(_rows(drawn)) == 100


def test_reference_pairs_share_the_held_out_rows_and_no_reference_rows():
    held, reference = _mixture(200, 1), _mixture(FLOOR_PAIRS * 200 + 7, 2)
    pairs = reference_pairs(held, reference)
    assert len(pairs) == FLOOR_PAIRS
    blocks = [_rows(b) for _, b in pairs]
    assert all(a is held for a, _ in pairs) and all(len(b) == 200 for b in blocks)
    assert len(set().union(*blocks)) == FLOOR_PAIRS * 200  # disjoint blocks: independent reference samples
    small = reference_pairs(held, reference[:300])  # fewer than n_pairs n rows: a draw of n rows per pair
    assert all(len(_rows(b)) == 200 for _, b in small) and len({tuple(sorted(_rows(b))) for _, b in small}) > 1


def test_halving_pairs_are_disjoint_halves_drawn_anew_per_pair():
    x = _mixture(101, 3)
    pairs = halving_pairs(x)
    assert len(pairs) == FLOOR_PAIRS
    for a, b in pairs:
        assert len(a) == len(b) == 50 and not (_rows(a) & _rows(b))
    assert len({tuple(sorted(_rows(a))) for a, _ in pairs}) == FLOOR_PAIRS


def test_the_floor_is_the_mean_and_spread_of_its_pairs():
    held, reference = _mixture(150, 4), _mixture(1000, 5)
    pairs = reference_pairs(held, reference)
    values = torch.stack([w2(a, b) for a, b in pairs])
    floor = floor_distances(pairs)
    assert torch.allclose(floor["w2_floor"], values.mean()) and torch.allclose(floor["w2_floor_sd"], values.std())
    assert float(floor["w2_floor_sd"]) > 0
    single = floor_distances(pairs[:1])
    assert float(single["w2_floor_sd"]) == 0.0 and torch.allclose(single["w2_floor"], values[0])


def test_an_exact_sampler_scores_within_the_floors_spread_and_a_shifted_one_does_not():
    n = 400
    held, reference = _mixture(n, 6), _mixture(FLOOR_PAIRS * n, 7)
    floor = floor_distances(reference_pairs(held, reference))
    mean, sd = float(floor["w2_floor"]), float(floor["w2_floor_sd"])
    exact = sample_distances(_mixture(n, 8), held, floor)
    assert abs(float(exact["w2"]) - mean) < 5 * sd * math.sqrt(1 + 1 / FLOOR_PAIRS)
    assert float(exact["w2_ratio"]) == float(exact["w2"]) / mean
    assert exact["w2_floor"] is floor["w2_floor"] and exact["w2_floor_sd"] is floor["w2_floor_sd"]
    # W2 is at least the distance of the two clouds' means (Jensen): a shift by 2 across the modes' narrow axis
    # (std 0.5, so the sample means differ by 0.5 sqrt(2 / n) = 0.035 besides) puts it far above the floor.
    shifted = sample_distances(_mixture(n, 8) + torch.tensor([0.0, 2.0]), held, floor)
    assert float(shifted["w2"]) > mean + 5 * sd
