"""The pendulum's Bayes-optimal posterior: its candidates are the generator's own trajectories, its predictive
interval is calibrated, and it beats a nearest-neighbour imputer (the limit no model can beat on average)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lvebm_lightning.data.pendulum_posterior import candidates, pendulum_posterior
from lvebm_lightning.data.systems import Pendulum

N_TEST = 400


def test_candidates_are_the_generators_noise_free_trajectories():
    system = Pendulum()
    angles, log_prior, energy, phase = candidates(system, n_energy=20)
    assert math.isclose(float(torch.logsumexp(log_prior, 0)), 0.0, abs_tol=1e-9)  # the prior is normalised
    pick = torch.tensor([0, len(angles) // 3, len(angles) - 1])
    exact = system.trajectories(energy[pick].numpy(), phase[pick].numpy())
    np.testing.assert_allclose(angles[pick].numpy(), exact, atol=1e-12)


@pytest.mark.slow
def test_bayes_reconstruction_is_calibrated_and_beats_nearest_neighbours():
    system = Pendulum()
    x, truth = system.sample_with_latents(N_TEST, seed=11)
    train = torch.from_numpy(system.sample(2000, seed=12)).double()
    x = torch.from_numpy(x).double()
    observed = torch.arange(system.dim) < system.dim // 2
    post = pendulum_posterior(system, x, observed, n_samples=400, generator=torch.Generator().manual_seed(0))
    miss = ~observed
    lo, hi = post.samples[:, :, miss].quantile(0.05, dim=1), post.samples[:, :, miss].quantile(0.95, dim=1)
    inside = ((x[:, miss] >= lo) & (x[:, miss] <= hi)).double().mean(-1)  # per datum
    # entries of one datum are correlated: the standard error of the mean over data is at most sqrt(0.09 / N)
    assert abs(float(inside.mean()) - 0.9) < 4 * math.sqrt(0.09 / N_TEST) + 400**-0.5, float(inside.mean())
    bayes = float(((post.mean[:, miss] - x[:, miss]) ** 2).mean().sqrt())
    nearest = torch.cdist(x[:, observed], train[:, observed]).argmin(-1)
    knn = float(((train[nearest][:, miss] - x[:, miss]) ** 2).mean().sqrt())
    assert bayes < 0.8 * knn, (bayes, knn)
    energy = torch.from_numpy(truth[:, 0])
    r2 = 1 - float(((post.energy - energy) ** 2).mean() / energy.var())
    assert r2 > 0.95, r2
