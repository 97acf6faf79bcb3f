"""The gallery's posterior clouds (``particles.starts.posterior_starts``): their chains start at the store's
particles of the nearest training datum (the rank's own shard), or at an amortised encoder's draws, and every count
of the gallery is checked at construction."""

from __future__ import annotations

import pytest
import torch

from callbacks.gallery import Gallery
from lvebm_lightning.particles.starts import posterior_starts
from lvebm_lightning.training.run import prepare


@pytest.mark.parametrize("world", [1, 2])
def test_posterior_clouds_start_at_the_nearest_training_datums_particles(make_cfg, world):
    """On rank 0 of ``world`` ranks: the nearest owned datum's K particles first, then the next nearest's."""
    prepared = prepare(make_cfg("sampler.posterior.n_particles=4"))
    datamodule, module = prepared.datamodule, prepared.model
    datamodule.setup("fit")
    module.posterior.setup(datamodule.n_train, module.dz, 0, world, torch.device("cpu"),
                           torch.Generator().manual_seed(0))
    store = module.posterior.store
    n, k, dz = store.values.shape
    store.values = torch.arange(n * k * dz, dtype=torch.float32).view(n, k, dz)  # every particle its own value
    train = datamodule.splits["train"][store.owned]  # rank 0's rows, aligned with its store rows
    chosen = torch.tensor([3, 17])  # positions within rank 0's shard
    x_std = train[chosen] + 1e-4
    starts = posterior_starts(x_std, 10, datamodule.splits["train"], store,
                              generator=torch.Generator().manual_seed(1))
    assert starts.shape == (2, 10, dz)
    second = torch.cdist(x_std, train).topk(2, largest=False).indices[:, 1]
    for row, (first, after) in enumerate(zip(chosen.tolist(), second.tolist(), strict=True)):
        assert torch.equal(starts[row, :k], store.values[first])
        assert torch.equal(starts[row, k:2 * k], store.values[after])


def test_posterior_clouds_without_a_store_or_encoder_start_at_the_prior(make_cfg):
    prepared = prepare(make_cfg("sampler=short_run"))
    module = prepared.model
    x_std = torch.zeros(2, module.dx)
    assert module.posterior.store is None and not getattr(module.posterior, "trainable", False)
    assert posterior_starts(x_std, 256, prepared.datamodule.splits["train"], None, None, torch.Generator()) is None


def test_posterior_clouds_of_an_amortised_posterior_start_at_its_encoders_draws(make_cfg):
    prepared = prepare(make_cfg("sampler=amortised"))
    module = prepared.model
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():  # an encoder far from its N(0, I) initialisation
        for parameter in module.posterior.parameters():
            parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
    x_std = torch.randn(3, module.dx, generator=generator)
    assert module.posterior.store is None and module.posterior.trainable
    starts = posterior_starts(x_std, 4000, prepared.datamodule.splits["train"], None, module.posterior,
                              torch.Generator().manual_seed(3))
    with torch.no_grad():
        mu, log_sigma = module.posterior(x_std)
    assert float(mu.abs().max()) > 0.2 and float((log_sigma.exp() - 1).abs().max()) > 0.2
    assert starts.shape == (3, 4000, module.dz)
    # The draws' mean and spread are the encoder's, to 5 standard errors of 4000 draws.
    assert torch.allclose(starts.mean(1), mu, atol=5 * float(log_sigma.exp().max()) / 4000**0.5)
    assert torch.allclose(starts.std(1), log_sigma.exp(), rtol=5 / (2 * 3999) ** 0.5, atol=1e-6)


@pytest.mark.parametrize("key", ["n_samples", "n_posterior", "n_posterior_particles", "n_steps", "grid_points"])
def test_every_count_of_the_gallery_is_checked(key):
    with pytest.raises(ValueError, match=f"{key} must be a whole number >= 1, got 0"):
        Gallery(**{key: 0})
