"""Validation and test metrics of an LVEBM (docs/design.md section 5), computed over all ranks.

Every validation (and test) epoch:

- **W2** (exact, POT) in the data's units between n held-out data and (a) the x-marginal of fresh long chains
  from N(0, I) (the model's own distribution, ``w2``) and (b) the negative pool (``w2_pool``). Beside it the
  floor: the same held-out rows against ``FLOOR_PAIRS`` independent samples of n training data, their mean
  ``w2_floor`` and standard deviation ``w2_floor_sd``; ``w2_ratio`` = w2 / w2_floor. For dx > 3 the sliced W2
  is logged too (``sliced_w2``).
- **Exact log-likelihood** when dx + dz <= 3: log p(x) = log int exp(-E(x, z)) dz - log Z by quadrature on a
  box covering data and model samples (``nll``, per datum, in data units); ``quadrature_edge_mass`` is the
  share of exp(-E) in the box's outer cells. For datasets with a known density, the true density's NLL
  (``nll_true``) and the gap (``nll_gap``).
- **Physical observables** of the dataset's system (e.g. a lattice field's magnetisation, susceptibility and
  two-point function; a double well's well masses) on the model's fresh-chain samples (``obs/<name>``) and on
  the held-out data (``obs/<name>_data``).
- **ELBO** of the posterior particles of ``n_elbo`` training data: q_i is a Gaussian mixture around the
  particles (``lvebm_lightning.metrics.elbo``), ``elbo`` and the tighter importance-weighted ``iw_bound``, and
  beside them the exact ``train_log_lik`` of the same data when quadrature applies. The particles are the
  persistent ones, fresh short-run chains, or the amortised encoder's (refined) samples, as in training; for the
  encoder its own exact density gives ``elbo_encoder`` = E_q[-E] + H(q) - log Z, with no bandwidth. In higher
  dimension log Z comes from AIS (``log_z_ais``; the bounds then inherit its upward bias).

Nothing is computed twice. The floor depends on the data alone: it is computed once per split (at the split's
first evaluation) and reused. What depends on the model at a step but not on the split (the gathered fresh
chains and their observables, the quadrature box and log Z, the ELBO rows with AIS log Z, the chains of
``w2_2x``) is kept from the last evaluation and reused by the next one at the same global step, so the final
test after a validation at the same step scores only its own split; loading a checkpoint drops what was kept.

Under DDP every rank draws its share of the model samples, scores its shard of the held-out data and of the
ELBO data, and runs its share of the AIS chains; rows are gathered with torchmetrics' ``CatMetric`` and means
taken with ``MeanMetric``. The exact W2 distances are computed once, on rank 0, and broadcast, so every rank holds
(and logs) the same numbers; Lightning's loggers write them from rank 0 only.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor
from torchmetrics.aggregation import CatMetric

from callbacks.ranks import gather_rows, per_rank, rank_mean
from lvebm_lightning.data.systems import GridDensity
from lvebm_lightning.metrics import ais_log_partition, w2
from lvebm_lightning.metrics.evaluation import (
    FLOOR_PAIRS,
    QUADRATURE_MAX_DIM,
    data_nll,
    floor_distances,
    held_out_rows,
    posterior_bounds,
    quadrature,
    reference_pairs,
    sample_distances,
)
from lvebm_lightning.particles.store import shard_indices


class EvaluationMetrics(pl.Callback):
    """Computes and logs W2, exact log-likelihood and ELBO on the validation and test splits.

    Args:
        n_samples: n_eval, model samples (fresh chains, all ranks together) and data points used for W2.
        n_elbo: training data whose posterior particles give the ELBO (all ranks together).
        elbo_samples: S, draws from each q_i.
        quadrature_points: grid points per dimension of the quadrature (dx + dz <= 3).
        box_margin: the quadrature box is the samples' range widened by this fraction on each side.
        max_edge_mass, box_widenings: while more than ``max_edge_mass`` of exp(-E) lies in the box's outer cells,
            widen the box 1.5-fold, at most ``box_widenings`` times (the final edge mass is logged).
        ais_chains: chains of AIS for log Z when dx + dz > 3 (0: no ELBO in high dimension).
        ais_temperatures: intermediate distributions of AIS.
        check_chain_length: also log W2 of chains run twice as long (``w2_2x``), to check T_eval suffices.
    """

    def __init__(
        self,
        n_samples: int = 2000,
        n_elbo: int = 256,
        elbo_samples: int = 64,
        quadrature_points: int = 64,
        box_margin: float = 0.3,
        max_edge_mass: float = 1e-3,
        box_widenings: int = 3,
        ais_chains: int = 256,
        ais_temperatures: int = 200,
        check_chain_length: bool = False,
    ) -> None:
        self.n_samples, self.n_elbo, self.elbo_samples = n_samples, n_elbo, elbo_samples
        self.quadrature_points, self.box_margin = quadrature_points, box_margin
        self.max_edge_mass, self.box_widenings = max_edge_mass, box_widenings
        self.ais_chains, self.ais_temperatures = ais_chains, ais_temperatures
        self.check_chain_length = check_chain_length
        self._floors: dict[tuple[str, int, int], dict[str, Tensor]] = {}  # (split, N, n) -> floor, on rank 0
        self._kept: dict[str, Any] = {}  # the split-independent results of the last evaluation, with its step
        self.latest: dict[str, Tensor] = {}

    # -- epoch start: model samples and log Z -------------------------------------------------------------------
    def _start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        device = pl_module.device
        self._data = CatMetric(nan_strategy="disable").to(device)
        self._nll, self._nll_true = rank_mean(device), rank_mean(device)
        step = pl_module.global_step
        if not trainer.strategy.reduce_boolean_decision(self._kept.get("step") == step, all=True):
            chains = pl_module.model_samples(per_rank(self.n_samples, trainer.world_size))
            model_xz = gather_rows(chains, device)  # standardised (x, z)
            box = None
            if pl_module.dx + pl_module.dz <= QUADRATURE_MAX_DIM:
                train_x = trainer.datamodule.splits["train"][: self.n_samples].to(device)
                box = quadrature(
                    pl_module.energy, pl_module.dx, pl_module.dz, train_x, model_xz, self.quadrature_points,
                    self.box_margin, self.max_edge_mass, self.box_widenings,
                )
            self._kept = {"step": step, "model_xz": model_xz, "quadrature": box}
        self.model_xz, self._quadrature = self._kept["model_xz"], self._kept["quadrature"]

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: Any) -> None:
        self._kept = {}  # other weights, possibly at the same step: nothing kept applies

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module)

    # -- batches: data and its exact log-likelihood -----------------------------------------------------------------
    @torch.no_grad()
    def _batch(self, trainer: pl.Trainer, pl_module: Any, batch: tuple[Tensor, Tensor]) -> None:
        x_std, _ = batch
        self._data.update(pl_module.to_data_units(x_std))
        log_det = pl_module.data_std.log().sum()
        if self._quadrature is not None:
            self._nll.update(data_nll(pl_module.energy, x_std, pl_module.dz, self._quadrature, log_det))
        system = getattr(trainer.datamodule, "system", None)
        if isinstance(system, GridDensity):
            x = pl_module.to_data_units(x_std)
            nll_true = system.energy(x.cpu().double()) + system.log_partition()
            self._nll_true.update(nll_true.to(x.device))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._batch(trainer, pl_module, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._batch(trainer, pl_module, batch)

    # -- epoch end: W2, NLL, ELBO ---------------------------------------------------------------------------------
    def _end(self, trainer: pl.Trainer, pl_module: Any, stage: str) -> None:
        device = pl_module.device
        cpu = torch.device("cpu")
        data = self._data.compute().to(cpu)
        model_x = pl_module.to_data_units(self.model_xz[:, : pl_module.dx]).to(cpu)
        n = min(self.n_samples, len(data), len(model_x))
        train_x = trainer.datamodule.raw["train"].to(cpu)
        pool, pool_x = pl_module.negative_pool, None
        if pool is not None and pool.pool is not None:
            pool_x = pl_module.to_data_units(pool.full()[:, : pl_module.dx]).to(cpu)
        if self.check_chain_length and "longer_x" not in self._kept:
            longer = pl_module.sample_joint(
                per_rank(self.n_samples, trainer.world_size), n_steps=2 * pl_module.long_chains["n_steps"]
            )
            self._kept["longer_x"] = pl_module.to_data_units(gather_rows(longer, device)[:, : pl_module.dx]).to(cpu)
        longer_x = self._kept.get("longer_x")
        # Exact W2 is the costly part: rank 0 computes it once from the gathered samples and shares the numbers.
        out: dict[str, Tensor] = {}
        if trainer.is_global_zero:
            held = held_out_rows(data, n)
            key = (stage, len(data), n)
            if key not in self._floors:
                self._floors[key] = floor_distances(reference_pairs(held, train_x, FLOOR_PAIRS))
            out = sample_distances(model_x, held, self._floors[key], pool_x)
            if longer_x is not None:
                out["w2_2x"] = w2(longer_x, held, n, torch.Generator().manual_seed(0))
        out = trainer.strategy.broadcast(out, src=0)
        if self._quadrature is not None:
            out["nll"] = self._nll.compute()
            out["quadrature_edge_mass"] = torch.tensor(self._quadrature["edge_mass"])
        if self._nll_true.update_count > 0:
            out["nll_true"] = self._nll_true.compute()
            if "nll" in out:
                out["nll_gap"] = out["nll"] - out["nll_true"]
        system = getattr(trainer.datamodule, "system", None)
        if system is not None:
            if "observables" not in self._kept:
                self._kept["observables"] = system.observables(model_x)
            for name, value in self._kept["observables"].items():
                out[f"obs/{name}"] = value
            for name, value in system.observables(data).items():
                out[f"obs/{name}_data"] = value
        if "elbo" not in self._kept:
            self._kept["elbo"] = self._elbo(trainer, pl_module)
        out.update(self._kept["elbo"])
        values = {f"{stage}/{k}": v.detach().float().to(device) for k, v in out.items()}
        pl_module.log(f"{stage}/w2", values.pop(f"{stage}/w2"), prog_bar=True, sync_dist=False)
        pl_module.log_dict(values, prog_bar=False, sync_dist=False)
        self.latest = {"data": data, "model": model_x, "model_xz": self.model_xz.to(cpu)}
        if pool_x is not None:
            self.latest["pool"] = pool_x

    def _elbo(self, trainer: pl.Trainer, pl_module: Any) -> dict[str, Tensor]:
        """ELBO and IW bound (data units) of the posterior particles of the first n_elbo training data."""
        if self.n_elbo <= 0 or pl_module.dz == 0:
            return {}
        device = pl_module.device
        if self._quadrature is not None:
            log_z = self._quadrature["log_z"]
        elif self.ais_chains > 0:
            # The chains are split over the ranks (each with its own stream); pooling every chain's weight,
            # log Z_hat = logsumexp(log w) - log C is the same estimate as C chains on one device.
            result = ais_log_partition(
                pl_module.energy, pl_module.dx, pl_module.dz, n_chains=per_rank(self.ais_chains, trainer.world_size),
                n_temperatures=self.ais_temperatures, generator=pl_module.draw_generator(pl_module.global_step, 3),
                kernel=pl_module.long_chain_config().kernel,
            )
            log_weights = gather_rows(result.log_weights.unsqueeze(-1), device).squeeze(-1)
            log_z = float(log_weights.logsumexp(0)) - math.log(len(log_weights))
        else:
            return {}
        step, rank, world = pl_module.global_step, trainer.global_rank, trainer.world_size
        train_x = trainer.datamodule.splits["train"]
        index = shard_indices(len(train_x), rank, world)[: per_rank(self.n_elbo, trainer.world_size)]
        x = train_x[index].to(device)
        bounds = posterior_bounds(
            pl_module, x, index, log_z, self.elbo_samples, lambda key: pl_module.draw_generator(step, key),
            lambda x_std, k: pl_module.infer_standardised(x_std, k),
        )
        log_det = float(pl_module.data_std.log().sum())
        rows = {name: value - log_det for name, value in bounds.items()}
        if self._quadrature is not None:
            rows["train_log_lik"] = -data_nll(pl_module.energy, x, pl_module.dz, self._quadrature, log_det)
        out = {name: rank_mean(device, value).compute() for name, value in rows.items()}
        if self._quadrature is None:
            out["log_z_ais"] = torch.tensor(float(log_z))
        return out

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end(trainer, pl_module, "test")
