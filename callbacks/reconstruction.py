"""Conditional generation, measured in every run (docs/design.md section 5, "Conditional generation").

W2 can stay near its floor while the latent fails to explain the data (docs/design.md section 8); reconstructing
coordinates that the data hide cannot. After every validation and the final test, where dx >= 4 or a mask is
configured, the first ``n_rows`` rows of the split are reconstructed with a fixed mask (``hidden``; default the
last half of the coordinates hidden): S = ``n_samples`` chains per row on (x_m, z) with x_o held fixed
(``inference.reconstruction.conditional_sample``), T = ``n_steps`` steps of the long chains' kernel, started at
the training data nearest in the observed coordinates: their missing values, and their persistent particles
(``particles.starts``; without a store, the amortised encoder's draw or N(0, I)). Logged, in the data's units:

- ``recon_rmse``: RMSE of the samples' mean against the hidden truth, over all hidden entries;
- ``recon_coverage``: the share of hidden truths inside their samples' central 90% interval;
- ``recon_rmse_knn``: the same RMSE for the mean of the k nearest training rows in the observed coordinates
  (k-NN regression on the training split, the same rows and mask): the reference a latent model should beat.

Under DDP each rank reconstructs its share of the rows (row i on rank i mod W) and the sums behind the three
numbers are added over the ranks, so every rank logs the same values. The store is gathered from every rank
(``ParticleStore.full``, as a checkpoint gathers it). The rows of rank 0 are kept for the gallery.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from lvebm_lightning.config.validation import ConfigError
from lvebm_lightning.energies.base import cached_weights
from lvebm_lightning.inference.reconstruction import conditional_sample
from lvebm_lightning.metrics.reconstruction import central_coverage, knn_predict
from lvebm_lightning.particles.starts import neighbour_starts
from lvebm_lightning.particles.store import shard_indices

MIN_DIM = 4
"""Without a configured mask, data of fewer coordinates are not reconstructed (too little to condition on)."""

LEVEL = 0.9
"""The central interval whose coverage is logged."""


class ReconstructionMetrics(pl.Callback):
    """Logs ``<stage>/recon_rmse``, ``<stage>/recon_coverage`` and ``<stage>/recon_rmse_knn`` (module docstring).

    Args:
        hidden: the coordinates (0-based) to hide and reconstruct; None: the last dx // 2, and only where dx >= 4.
        n_rows: held-out rows reconstructed (the first of the split, all ranks together).
        n_samples: S, chains per row.
        n_steps: T, Langevin steps of each chain.
        knn: k of the k-NN reference.
        n_gallery: rows whose samples are kept for the gallery.
    """

    def __init__(
        self, hidden: list[int] | None = None, n_rows: int = 128, n_samples: int = 16, n_steps: int = 200,
        knn: int = 10, n_gallery: int = 4,
    ) -> None:
        counts = {"n_rows": n_rows, "n_samples": n_samples, "knn": knn, "n_gallery": n_gallery, "n_steps": n_steps}
        for key, value in counts.items():
            low = 0 if key in ("n_steps", "n_gallery") else 2 if key == "n_samples" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{key} must be a whole number >= {low}, got {value!r}.")
        if hidden is not None:
            hidden = list(hidden)
            if not hidden or any(not isinstance(j, int) or isinstance(j, bool) or j < 0 for j in hidden):
                raise ValueError(f"hidden must be a non-empty list of coordinates >= 0 (or null), got {hidden!r}.")
            if len(set(hidden)) != len(hidden):
                raise ValueError(f"hidden names a coordinate twice: {hidden}; list each once.")
        self.hidden, self.n_rows, self.n_samples, self.n_steps = hidden, n_rows, n_samples, n_steps
        self.knn, self.n_gallery = knn, n_gallery
        self.gallery: dict[str, Any] = {}
        self._knn_error: dict[str, Tensor] = {}  # per split: the k-NN's squared error, which depends on data alone

    def check_data(self, datamodule: Any) -> None:
        """Refuse (one line, before anything is written) a mask that the data cannot take."""
        dx, n_train = datamodule.dim, datamodule.n_train
        if self.hidden is not None and max(self.hidden) >= dx:
            raise ConfigError(
                f"callbacks.reconstruction.hidden={self.hidden} names coordinate {max(self.hidden)}, but the data "
                f"have dx={dx} (coordinates 0..{dx - 1}); list coordinates below {dx}."
            )
        if self.hidden is not None and len(self.hidden) == dx:
            raise ConfigError(
                f"callbacks.reconstruction.hidden hides all {dx} coordinates, leaving nothing to condition on; "
                "leave at least one out."
            )
        if self.mask(dx) is not None and n_train < self.n_samples:
            raise ConfigError(
                f"callbacks.reconstruction.n_samples={self.n_samples} chains start at as many training data, but "
                f"there are {n_train}; lower callbacks.reconstruction.n_samples."
            )

    def mask(self, dx: int) -> Tensor | None:
        """``[dx]`` bool, True where hidden; None where nothing is reconstructed."""
        if self.hidden is None and dx < MIN_DIM:
            return None
        hidden = torch.zeros(dx, dtype=torch.bool)
        hidden[self.hidden if self.hidden is not None else list(range(dx - dx // 2, dx))] = True
        return hidden

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._score(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._score(trainer, pl_module, "test")

    @torch.no_grad()
    def _score(self, trainer: pl.Trainer, pl_module: Any, stage: str) -> None:
        hidden = self.mask(pl_module.dx)
        if hidden is None:
            return
        device, data = pl_module.device, trainer.datamodule
        rows = data.splits[stage][: self.n_rows]
        x = rows[shard_indices(len(rows), trainer.global_rank, trainer.world_size)].to(device)
        store = pl_module.posterior.store
        particles = store.full().to(device) if store is not None and pl_module.dz > 0 else None  # every rank
        sums = torch.zeros(4, dtype=torch.float64, device=device)  # squared error, covered, k-NN squared error, n
        if len(x):
            sums, samples = self._reconstruct(trainer, pl_module, stage, x, hidden.to(device), particles)
            if trainer.is_global_zero:
                self.gallery = {"truth": pl_module.to_data_units(x[: self.n_gallery]).cpu(),
                                "samples": samples[: self.n_gallery].cpu(), "hidden": hidden}
        sums = trainer.strategy.reduce(sums, reduce_op="sum")
        count = sums[3].clamp_min(1.0)
        values = {"recon_rmse": (sums[0] / count).sqrt(), "recon_coverage": sums[1] / count,
                  "recon_rmse_knn": (sums[2] / count).sqrt()}
        for name, value in values.items():
            pl_module.log(f"{stage}/{name}", value.float(), sync_dist=False)

    def _reconstruct(
        self, trainer: pl.Trainer, pl_module: Any, stage: str, x: Tensor, hidden: Tensor, particles: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """The sums ``[4]`` of this rank's rows x ``[b, dx]`` (standardised) of split ``stage`` and their samples
        ``[b, S, dx]`` (data units)."""
        train = trainer.datamodule.splits["train"].to(x.device)
        missing = hidden.expand_as(x)
        posterior = pl_module.posterior
        encoder = posterior if getattr(posterior, "trainable", False) else None
        generator = pl_module.draw_generator(pl_module.global_step, 9)
        starts = neighbour_starts(x, missing, self.n_samples, train, particles, encoder, pl_module.dz, generator)
        config = pl_module.long_chain_config(self.n_steps)
        with cached_weights(pl_module.energy):
            xs, _ = conditional_sample(pl_module.energy, x, missing, pl_module.dz, self.n_samples, config, generator,
                                       starts, pl_module.collapsed)
        samples = pl_module.to_data_units(xs).double()
        truth = pl_module.to_data_units(x).double()
        drawn, target = samples[..., hidden], truth[:, hidden]
        if stage not in self._knn_error:
            raw = trainer.datamodule.raw["train"].to(x.device).double()
            knn = knn_predict(raw[:, ~hidden], raw[:, hidden], truth[:, ~hidden], self.knn)
            self._knn_error[stage] = ((knn - target) ** 2).sum()
        n = target.numel()
        sums = torch.stack([
            ((drawn.mean(1) - target) ** 2).sum(), central_coverage(drawn, target, LEVEL) * n,
            self._knn_error[stage], torch.tensor(float(n), dtype=torch.float64, device=x.device),
        ])
        return sums, samples
