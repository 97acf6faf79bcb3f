"""The start-set agreement check against a posterior that is bimodal in closed form.

Each datum b has p(z | x_b) = w N(z; mu_b, s^2 I) + (1 - w) N(z; -mu_b, s^2 I) in two dimensions, mu_b of length r
in a direction of its own. With r = 2.5, s = 0.3 the barrier between the modes is r^2 / (2 s^2) = 35 nats, so MALA
chains stay in the basin they start in (stuck); with r = 1, s = 0.5 it is 2 nats and they cross it many times
within the chain (mixing; checked against the mixture's closed-form mean (2w - 1) mu_b). One set of chains starts
at the major mode, as a store's particles would; the other from N(0, I).
"""

from __future__ import annotations

import math

import pytest
import torch

from lvebm_lightning.langevin import LangevinConfig, langevin
from lvebm_lightning.metrics.mixing import LEVEL, set_agreement

B, W = 400, 0.7  # data, weight of the major mode


def bimodal(radius: float, seed: int) -> torch.Tensor:
    """Mode centres mu_b ``[B, 2]`` of length ``radius``, in uniformly random directions."""
    angle = 2 * math.pi * torch.rand(B, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return radius * torch.stack([angle.cos(), angle.sin()], -1)


def chains(mu: torch.Tensor, s: float, n_per_set: int, n_steps: int, seed: int) -> torch.Tensor:
    """Final states ``[B, 2 S, 2]``: S chains from the major mode, then S from N(0, I), each moved by MALA."""
    gen = torch.Generator().manual_seed(seed)
    centre = mu.unsqueeze(1)

    def energy(z: torch.Tensor) -> torch.Tensor:
        log_major = math.log(W) - ((z - centre) ** 2).sum(-1) / (2 * s**2)
        log_minor = math.log(1 - W) - ((z + centre) ** 2).sum(-1) / (2 * s**2)
        return -torch.logaddexp(log_major, log_minor)

    from_store = centre + s * torch.randn(B, n_per_set, 2, generator=gen, dtype=torch.float64)
    from_prior = torch.randn(B, n_per_set, 2, generator=gen, dtype=torch.float64)
    z0 = torch.cat([from_store, from_prior], 1)
    z, _ = langevin(energy, z0, LangevinConfig(step_size=0.2 * s**2, n_steps=n_steps, kernel="mala"), gen)
    return z


def test_chains_stuck_in_their_starting_modes_are_flagged():
    """Sets that stay where they start disagree on about every datum: the prior's chains split between the basins
    (half each) while the store's stay in the major mode; with 32 chains a set, flagged on at least 90% of the
    data (99.75% here; with 16 a set, 77%: a set of 16 that happens to hold 10 in the major mode and 6 in the
    minor one is weak evidence against a set of 16 in the major mode)."""
    n_per_set = 32
    mu = bimodal(2.5, seed=0)
    z = chains(mu, 0.3, n_per_set, 300, seed=1)
    prior_major = ((z[:, n_per_set:] * mu.unsqueeze(1)).sum(-1) > 0).double().mean()
    assert abs(float(prior_major) - 0.5) < 5 * math.sqrt(0.25 / (B * n_per_set))  # stuck: no drift to the major mode
    assert bool(((z[:, :n_per_set] * mu.unsqueeze(1)).sum(-1) > 0).all())  # no chain of the store's set crossed
    check = set_agreement(z, n_per_set)
    assert float(check.disagree.double().mean()) >= 0.9, float(check.disagree.double().mean())


def test_chains_stuck_in_one_mode_each_are_flagged_on_every_datum():
    mu = bimodal(2.5, seed=2)
    gen = torch.Generator().manual_seed(3)
    major = mu.unsqueeze(1) + 0.3 * torch.randn(B, 8, 2, generator=gen, dtype=torch.float64)
    minor = -mu.unsqueeze(1) + 0.3 * torch.randn(B, 8, 2, generator=gen, dtype=torch.float64)
    assert bool(set_agreement(torch.cat([major, minor], 1), 8).disagree.all())


def test_chains_that_mix_are_rarely_flagged():
    """The same starts on a posterior whose barrier the chains cross: their pooled mean is the mixture's (within
    5 standard errors), and at most 5% of the data are flagged (the threshold allows LEVEL = 1%; the binomial
    standard error of a 1% share over 400 data is 0.5%)."""
    mu = bimodal(1.0, seed=4)
    s, n_per_set = 0.5, 32
    z = chains(mu, s, n_per_set, 400, seed=5)
    exact_mean = (2 * W - 1) * mu
    # Var of one draw along mu: s^2 + |mu|^2 (1 - (2w - 1)^2); the pooled error over all data and chains.
    sd = math.sqrt(s**2 + 1.0 * (1 - (2 * W - 1) ** 2)) / math.sqrt(B * 2 * n_per_set)
    along = ((z.mean(1) - exact_mean) * mu).sum(-1).mean()
    assert abs(float(along)) < 5 * sd, float(along)
    share = float(set_agreement(z, n_per_set).disagree.double().mean())
    assert share <= 0.05, share


def test_exact_draws_are_flagged_at_about_the_allowed_rate():
    """Two sets of exact, independent draws from the same bimodal law (the limit of perfect mixing), 8 coordinates:
    the share flagged stays below LEVEL plus 5 binomial standard errors."""
    gen = torch.Generator().manual_seed(6)
    n, s_per_set, d = 4000, 16, 8
    sign = torch.where(torch.rand(n, 2 * s_per_set, 1, generator=gen) < W, 1.0, -1.0).double()
    draws = sign * 2.0 + 0.5 * torch.randn(n, 2 * s_per_set, d, generator=gen, dtype=torch.float64)
    share = float(set_agreement(draws, s_per_set).disagree.double().mean())
    assert share < LEVEL + 5 * math.sqrt(LEVEL * (1 - LEVEL) / n), share


def test_only_the_compared_coordinates_count():
    """A coordinate held fixed (observed) has no spread and is left out; a datum whose sets never moved from one
    shared start agrees."""
    gen = torch.Generator().manual_seed(7)
    z = torch.randn(3, 10, 2, generator=gen, dtype=torch.float64)
    z[:, :, 0] = 1.0
    z[0, 5:, 1] += 50.0  # datum 0: the second set sits far from the first in coordinate 1
    check = set_agreement(z, 5, torch.tensor([[False, True]] * 3))
    assert check.disagree.tolist() == [True, False, False]
    z[:, :5, 0] = 2.0  # coordinate 0 now differs between the sets, but it is not compared
    assert set_agreement(z, 5, torch.tensor([[False, True]] * 3)).disagree.tolist() == [True, False, False]
    assert bool(set_agreement(z, 5).disagree.all())  # compared, it differs with no spread: infinite t
    assert not set_agreement(torch.ones(2, 6, 3), 3).disagree.any()
    with pytest.raises(ValueError, match="each set needs at least 2 chains"):
        set_agreement(z, 1)
