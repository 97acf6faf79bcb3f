"""Sample galleries: model samples over data, the learned landscape of x, posterior clouds z | x, reconstructions.

Drawn on rank 0 after each validation, and after the final test unless a validation at the same step drew them
already, from the samples the metrics callback gathered from every rank (``EvaluationMetrics.latest``), so that
even a run shorter than the validation interval has its galleries; saved as PNG under ``<run dir>/galleries/``
(``<figure>_step<N>.png``, and ``test_<figure>_step<N>.png`` for the test) and logged to W&B as images
(``gallery/<figure>``, ``gallery/test_<figure>``). Everything is shown in the data's own units, on axes x_1, x_2
(the first two coordinates of x when dx > 2); every title names the step. Where the reconstruction callback ran
(``ReconstructionMetrics``: dx >= 4 or a mask configured), ``reconstruction`` shows a few held-out rows: for
vector data (trajectories) curves over the coordinate index of the observed part, the truth and sampled missing
parts; for lattice data (a square field, ``side`` of the system or the energy) images of the observed field, the
true one and sampled fields with the hidden block filled in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import matplotlib
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from callbacks.reconstruction import ReconstructionMetrics
from lvebm_lightning.metrics import log_marginal
from lvebm_lightning.particles.starts import posterior_starts

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)


class Gallery(pl.Callback):
    """Writes three figures per validation: ``samples``, ``landscape`` and ``posterior``.

    Args:
        n_samples: points of each cloud drawn in the sample figure.
        n_posterior: data points whose posterior particle clouds are drawn.
        n_posterior_particles: fresh conditional chains per drawn datum.
        n_steps: Langevin steps of each of those chains (the long chains' kernel and step size) where they start
            at the persistent particles of the nearest training data (``particles.starts``) or at an amortised
            encoder's draws; chains from N(0, I) (no store, no encoder) take T_eval steps.
        grid_points: resolution of the landscape grid per axis.
    """

    def __init__(
        self, n_samples: int = 2000, n_posterior: int = 4, n_posterior_particles: int = 256, n_steps: int = 500,
        grid_points: int = 80,
    ) -> None:
        for key, value in {"n_samples": n_samples, "n_posterior": n_posterior, "n_steps": n_steps,
                           "n_posterior_particles": n_posterior_particles, "grid_points": grid_points}.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a whole number >= 1, got {value!r}")
        self.n_samples, self.n_posterior, self.n_steps = n_samples, n_posterior, n_steps
        self.n_posterior_particles, self.grid_points = n_posterior_particles, grid_points
        self.saved: list[Path] = []
        self._drawn_step: int | None = None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._from_metrics(trainer, pl_module, "")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._drawn_step != trainer.global_step:
            self._from_metrics(trainer, pl_module, "test_")

    def _from_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prefix: str) -> None:
        metrics = next((c for c in trainer.callbacks if hasattr(c, "latest") and c.latest), None)
        if metrics is None:
            return
        self._draw(trainer, pl_module, metrics.latest, prefix)
        self._drawn_step = trainer.global_step

    @rank_zero_only
    def _draw(self, trainer: pl.Trainer, pl_module: Any, latest: dict[str, torch.Tensor], prefix: str) -> None:
        out_dir = Path(trainer.default_root_dir) / "galleries"
        out_dir.mkdir(parents=True, exist_ok=True)
        step = trainer.global_step
        when = f"{'test, ' if prefix else ''}step {step}"
        figures = {
            "samples": self._samples(latest, when),
            "landscape": self._landscape(pl_module, latest, when),
            "posterior": self._posterior(trainer, pl_module, when),
            "reconstruction": self._reconstruction(trainer, pl_module, when),
        }
        paths = []
        for name, fig in figures.items():
            if fig is None:
                continue
            name = prefix + name
            path = out_dir / f"{name}_step{step:07d}.png"
            fig.savefig(path, dpi=90, bbox_inches="tight")
            plt.close(fig)
            paths.append((name, path))
        self.saved.extend(p for _, p in paths)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                for name, path in paths:
                    logger.log_image(key=f"gallery/{name}", images=[str(path)], step=step)

    def _samples(self, latest: dict[str, torch.Tensor], when: str) -> Any:
        data = latest["data"][: self.n_samples]
        panels = [("fresh long chains", latest["model"])]
        if "pool" in latest:
            panels.append(("negative pool", latest["pool"]))
        fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.2), squeeze=False)
        for ax, (title, cloud) in zip(axes[0], panels):
            cloud = cloud[: self.n_samples]
            if data.shape[1] == 1:
                ax.hist(data[:, 0].numpy(), bins=60, density=True, alpha=0.5, label="data")
                ax.hist(cloud[:, 0].numpy(), bins=60, density=True, alpha=0.5, label="model")
                ax.set_xlabel("$x_1$")
                ax.set_ylabel("density")
            else:
                ax.scatter(data[:, 0].numpy(), data[:, 1].numpy(), s=2, alpha=0.4, label="data")
                ax.scatter(cloud[:, 0].numpy(), cloud[:, 1].numpy(), s=2, alpha=0.4, label="model")
                ax.set_xlabel("$x_1$")
                ax.set_ylabel("$x_2$")
            ax.set_title(f"{title} ({when})")
            ax.legend(loc="upper right", markerscale=4)
        return fig

    @torch.no_grad()
    def _landscape(self, pl_module: Any, latest: dict[str, torch.Tensor], when: str) -> Any:
        """-log p(x) up to a constant on a grid over the first two coordinates (others at the data mean)."""
        if pl_module.dx < 2:
            return None
        data = latest["data"]
        lo, hi = data[:, :2].min(0).values, data[:, :2].max(0).values
        pad = 0.15 * (hi - lo)
        lo, hi = lo - pad, hi + pad
        g = self.grid_points
        u = torch.linspace(float(lo[0]), float(hi[0]), g)
        v = torch.linspace(float(lo[1]), float(hi[1]), g)
        uu, vv = torch.meshgrid(u, v, indexing="xy")
        x = pl_module.data_mean.cpu().expand(g * g, -1).clone()
        x[:, 0], x[:, 1] = uu.flatten(), vv.flatten()
        x_std = pl_module.to_standard_units(x.to(pl_module.device))
        if 0 < pl_module.dz <= 2:
            z = latest["model_xz"][:, pl_module.dx :]
            span = z.max(0).values - z.min(0).values
            z_lo, z_hi = (z.min(0).values - 0.3 * span).to(x_std), (z.max(0).values + 0.3 * span).to(x_std)
            free = -log_marginal(pl_module.energy, x_std, pl_module.dz, z_lo, z_hi, 48).float()
            title, label = "free energy", r"$-\log \int e^{-E(x, z)}\,dz$ - min (nats)"
        else:
            z0 = torch.zeros(g * g, pl_module.dz, device=pl_module.device)
            free = pl_module.energy(x_std, z0).float()
            title, label = "energy at z = 0", "$E(x, 0)$ - min (nats)"
        free = (free - free.min()).cpu().view(g, g)
        fig, ax = plt.subplots(figsize=(5, 4.2))
        free = free.clamp(max=float(free.quantile(0.95)))
        mesh = ax.pcolormesh(uu.numpy(), vv.numpy(), free.numpy(), shading="auto", cmap="viridis")
        fig.colorbar(mesh, ax=ax, label=label)
        ax.scatter(data[:500, 0].numpy(), data[:500, 1].numpy(), s=1, c="w", alpha=0.4)
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        ax.set_title(f"{title} ({when})")
        return fig

    def _posterior(self, trainer: pl.Trainer, pl_module: Any, when: str) -> Any:
        """Posterior particles z | x of a few validation points, from fresh conditional chains of ``n_steps``
        steps started where the store says: the persistent particles of the training data nearest to each point,
        among those this rank owns (no collective: rank 0 draws alone); without a store, at the encoder's draws
        (``n_steps``) or at N(0, I) (T_eval steps, the long chains' length)."""
        if pl_module.dz == 0:
            return None
        x_std = trainer.datamodule.splits["val"][: self.n_posterior].to(pl_module.device)
        generator = pl_module.draw_generator(trainer.global_step, 5)
        posterior = pl_module.posterior
        encoder = posterior if getattr(posterior, "trainable", False) else None
        z_start = posterior_starts(x_std, self.n_posterior_particles, trainer.datamodule.splits["train"],
                                   posterior.store, encoder, generator)
        n_steps = self.n_steps if z_start is not None else None  # from N(0, I): T_eval steps, as the long chains
        z = pl_module.infer_standardised(x_std, self.n_posterior_particles, n_steps=n_steps, generator=generator,
                                         z_start=z_start).cpu()
        fig, axes = plt.subplots(1, len(x_std), figsize=(3.2 * len(x_std), 3.4), squeeze=False, layout="constrained")
        x = pl_module.to_data_units(x_std).cpu()
        for ax, zi, xi in zip(axes[0], z, x):
            if pl_module.dz == 1:
                ax.hist(zi[:, 0].numpy(), bins=40, density=True)
                ax.set_xlabel("$z$")
                ax.set_ylabel("density")
            else:
                ax.scatter(zi[:, 0].numpy(), zi[:, 1].numpy(), s=3, alpha=0.5)
                ax.set_xlabel("$z_1$")
                ax.set_ylabel("$z_2$")
            ax.set_title("x = (" + ", ".join(f"{float(v):.2f}" for v in xi[:3]) + ")", fontsize=8)
        fig.suptitle(f"posterior particles z | x ({when})")
        return fig

    def _reconstruction(self, trainer: pl.Trainer, pl_module: Any, when: str) -> Any:
        """A few held-out rows with their hidden coordinates sampled (kept by ``ReconstructionMetrics``)."""
        kept = next((c.gallery for c in trainer.callbacks if isinstance(c, ReconstructionMetrics) and c.gallery), None)
        if kept is None:
            return None
        side = getattr(getattr(trainer.datamodule, "system", None), "side", None)
        side = side or getattr(pl_module.energy, "side", None)
        truth, samples, hidden = kept["truth"], kept["samples"], kept["hidden"]
        if side:
            return _lattice_reconstruction(truth, samples, hidden, side, when)
        fig, axes = plt.subplots(1, len(truth), figsize=(3.6 * len(truth), 3.2), squeeze=False, layout="constrained")
        index = torch.arange(1, truth.shape[1] + 1)
        for ax, true, drawn in zip(axes[0], truth, samples):
            for k, sample in enumerate(drawn[:8]):
                label = "samples" if k == 0 else None
                ax.plot(index[hidden], sample[hidden], color="C1", lw=0.8, alpha=0.5, label=label)
            ax.plot(index, true, color="0.6", lw=0.8)
            ax.plot(index[~hidden], true[~hidden], "o", color="k", ms=3, label="observed")
            ax.plot(index[hidden], true[hidden], "o", mfc="none", color="k", ms=4, label="truth (hidden)")
            ax.set_xlabel("coordinate")
        axes[0, 0].legend(fontsize=7)
        fig.suptitle(f"reconstruction of the hidden coordinates, held-out data ({when})")
        return fig


def _lattice_reconstruction(truth: torch.Tensor, samples: torch.Tensor, hidden: torch.Tensor, side: int,
                            when: str) -> Any:
    """Rows of images: the observed field (hidden block blank), the true field, three sampled fields."""
    n_drawn = min(3, samples.shape[1])
    colours = matplotlib.colormaps["RdBu_r"].copy()
    colours.set_bad("0.75")  # the hidden block of the observed field
    fig, axes = plt.subplots(len(truth), 2 + n_drawn, figsize=(2.2 * (2 + n_drawn), 2.2 * len(truth)),
                             squeeze=False, layout="constrained")
    for row, true, drawn in zip(axes, truth, samples):
        observed = torch.where(hidden, torch.tensor(float("nan")), true)
        fields = [("observed", observed), ("truth", true)]
        fields += [(f"sample {k + 1}", drawn[k]) for k in range(n_drawn)]
        limit = float(true.abs().max())
        for ax, (title, field) in zip(row, fields):
            ax.imshow(field.view(side, side).numpy(), cmap=colours, vmin=-limit, vmax=limit)
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"reconstruction of the hidden block, held-out data ({when})")
    return fig
