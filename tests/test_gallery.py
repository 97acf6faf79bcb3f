"""The gallery's posterior clouds: their chains start at the store's particles of the nearest training datum (the
rank's own shard), take ``callbacks.gallery.n_steps`` steps, and every count is checked at construction."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from callbacks.gallery import Gallery
from lvebm_lightning.training.run import prepare


def test_posterior_clouds_start_at_the_nearest_training_datums_particles(make_cfg):
    prepared = prepare(make_cfg("sampler.posterior.n_particles=4"))
    datamodule, module = prepared.datamodule, prepared.model
    datamodule.setup("fit")
    module.posterior.setup(datamodule.n_train, module.dz, 0, 1, torch.device("cpu"), torch.Generator().manual_seed(0))
    store = module.posterior.store
    n, k, dz = store.values.shape
    store.values = torch.arange(n * k * dz, dtype=torch.float32).view(n, k, dz)  # every particle its own value
    train = datamodule.splits["train"]
    chosen = torch.tensor([3, 17])
    x_std = train[chosen] + 1e-4  # nearer to rows 3 and 17 than to any other row
    gallery = Gallery(n_posterior_particles=10, n_steps=7)
    starts = gallery._starts(SimpleNamespace(datamodule=datamodule), module, x_std, torch.Generator().manual_seed(1))
    assert starts.shape == (2, 10, dz)
    # The nearest datum's k particles come first, in order; the chains after them start at the next neighbours.
    for row, datum in enumerate(chosen.tolist()):
        assert torch.equal(starts[row, :k], store.values[datum])
        assert not any(torch.equal(starts[row, j], store.values[datum, 0]) for j in range(k, 10))


def test_posterior_clouds_without_a_store_or_encoder_start_at_the_prior(make_cfg):
    prepared = prepare(make_cfg("sampler=short_run"))
    module = prepared.model
    gallery = Gallery()
    x_std = torch.zeros(2, module.dx)
    trainer = SimpleNamespace(datamodule=prepared.datamodule)
    assert module.posterior.store is None and gallery._starts(trainer, module, x_std, torch.Generator()) is None


def test_posterior_clouds_of_an_amortised_posterior_start_at_its_encoders_draws(make_cfg):
    prepared = prepare(make_cfg("sampler=amortised"))
    module = prepared.model
    x_std = torch.randn(3, module.dx, generator=torch.Generator().manual_seed(2))
    trainer = SimpleNamespace(datamodule=prepared.datamodule)
    starts = Gallery(n_posterior_particles=4000)._starts(trainer, module, x_std, torch.Generator().manual_seed(3))
    with torch.no_grad():
        mu, log_sigma = module.posterior(x_std)
    assert starts.shape == (3, 4000, module.dz)
    # The draws' mean and spread are the encoder's, to 5 standard errors of 4000 draws.
    assert torch.allclose(starts.mean(1), mu, atol=5 * float(log_sigma.exp().max()) / 4000**0.5)
    assert torch.allclose(starts.std(1), log_sigma.exp(), rtol=5 / (2 * 3999) ** 0.5)


@pytest.mark.parametrize("key", ["n_samples", "n_posterior", "n_posterior_particles", "n_steps", "grid_points"])
def test_every_count_of_the_gallery_is_checked(key):
    with pytest.raises(ValueError, match=f"{key} must be a whole number >= 1, got 0"):
        Gallery(**{key: 0})
