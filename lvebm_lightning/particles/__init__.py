"""Posterior strategies: how the positive phase gets latent particles z ~ p(z | x_i).

All strategies answer one call, ``particles(energy, x, index, generator) -> z [B, K, dz]``:

- ``PersistentPosterior`` (the method): K persistent particles per training datum, kept in a
  ``ParticleStore`` and moved by T_z steps of conditional Langevin on z -> E(x_i, z) each time datum i is
  in a batch, so the particles keep tracking p(z | x_i) as theta moves (a Wasserstein gradient flow of q_i).
- ``ShortRunPosterior`` (a baseline): K fresh chains from N(0, I) for every batch, T_z steps, nothing kept.
- ``AmortisedPosterior`` (a baseline): an encoder q_phi(z | x) = N(mu_phi(x), diag sigma_phi(x)^2) trained on
  the ELBO alongside the energy; K samples from it, optionally refined by T_z conditional steps.

The conditional energy of particles ``z [B, K, dz]`` is E(x_i, z_i^k), x broadcast over K.

For the ELBO every strategy also answers ``evaluation_particles(energy, x, index, generator, fresh_chains)``: the
particles whose mixture density q_i bounds log p(x_i) (``lvebm_lightning.metrics.evaluation.posterior_bounds``):
the stored particles of training data (persistent; fresh chains ``fresh_chains(x, K)`` for data it holds none
of), or the strategy's own training draws (short-run chains, the encoder's refined samples). The amortised
strategy also has its own exact density, ``elbo``.

The hook for strategies with trainable parts: every strategy has a class attribute ``trainable``. A trainable
strategy is an ``nn.Module`` (so it is a submodule of the LightningModule: its weights are in the checkpoint and
DDP averages its gradients) and provides ``loss(energy, x, generator)``, a scalar whose gradient reaches its own
parameters only (never theta), and ``configure_optimizer()``, the optimizer of those parameters. The module adds
that loss to its energy loss before its one backward and steps both optimizers.
"""

from __future__ import annotations

from typing import Any

from lvebm_lightning.particles.amortised import AmortisedPosterior
from lvebm_lightning.particles.chains import FreshChains, PersistentPosterior, ShortRunPosterior, conditional_langevin

__all__ = [
    "POSTERIORS", "AmortisedPosterior", "FreshChains", "PersistentPosterior", "Posterior", "ShortRunPosterior",
    "build_posterior", "conditional_langevin",
]

Posterior = PersistentPosterior | ShortRunPosterior | AmortisedPosterior
POSTERIORS: dict[str, type[Posterior]] = {
    "persistent": PersistentPosterior, "short_run": ShortRunPosterior, "amortised": AmortisedPosterior,
}


def build_posterior(
    kind: str, dx: int | None = None, dz: int | None = None, encoder: dict[str, Any] | None = None, **kwargs: Any
) -> Posterior:
    """The posterior strategy named ``kind`` (one of ``POSTERIORS``).

    ``kwargs`` (n_particles, langevin, init_scale) go to every strategy, ``store_device`` to the persistent one;
    a trainable one (the amortised encoder) also gets dx, dz and its ``encoder`` settings (width, depth,
    activation, lr), which the others ignore.
    """
    if kind not in POSTERIORS:
        raise ValueError(f"Unknown posterior kind '{kind}'; choose one of {sorted(POSTERIORS)}.")
    cls = POSTERIORS[kind]
    store_device = kwargs.pop("store_device", None)
    if store_device is not None:
        if cls is not PersistentPosterior:
            raise ValueError(f"sampler.posterior.store_device applies to the persistent posterior, not '{kind}'.")
        kwargs["store_device"] = store_device
    if cls.trainable:
        kwargs.update(dx=dx, dz=dz, **(encoder or {}))
    return cls(**kwargs)
