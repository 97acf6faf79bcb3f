"""``evaluate``: the validation callback's metrics of a loaded checkpoint on given data (``lvebm-eval``).

The model samples, the quadrature box and the ELBO draws come from the streams the validation callback
(``callbacks.metrics``) uses at the checkpoint's step, so that on the run's own splits the numbers are those
training logged: W2 and its floor (the mean ``w2_floor`` and spread ``w2_floor_sd`` over pairs of data samples),
the exact NLL (dx + dz <= 3), and ``train_elbo``, the bound training logs as ``val/elbo`` / ``test/elbo``. That
bound is computed on the persistent particles of the first ``n_elbo`` training data (whatever split is
evaluated); ``elbo`` here bounds log p(x) of the given data instead, with K fresh posterior chains per datum, so
the two differ by design (``elbo_note``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lvebm_lightning.inference.checkpoint import InferenceError, LoadedModel, check_positive, load, load_data
from lvebm_lightning.inference.draws import infer
from lvebm_lightning.inference.options import INFER_START
from lvebm_lightning.metrics import ais_log_partition, elbo
from lvebm_lightning.metrics.evaluation import (
    QUADRATURE_MAX_DIM,
    data_nll,
    floor_distances,
    halving_pairs,
    held_out_rows,
    posterior_bounds,
    quadrature,
    reference_pairs,
    sample_distances,
)

EVAL_DEFAULTS = {
    "elbo_samples": 64, "quadrature_points": 64, "box_margin": 0.3, "ais_chains": 256, "ais_temperatures": 200,
    "max_edge_mass": 1e-3, "box_widenings": 3, "n_elbo": 256,
}
"""Settings when the checkpoint's config has none (those of ``callbacks.metrics.EvaluationMetrics``)."""

ELBO_NOTE = (
    "elbo / iw_bound bound log p(x) of the given data with fresh posterior chains; training logs train_elbo "
    "(persistent particles of its first n_elbo training data) as val/elbo and test/elbo"
)


def evaluate(
    ckpt: str | Path | LoadedModel,
    data: str | Path | np.ndarray | Tensor = "test",
    *,
    n_samples: int | None = None,
    n_particles: int | None = None,
    elbo_samples: int | None = None,
    quadrature_points: int | None = None,
    box_margin: float | None = None,
    ais_chains: int | None = None,
    ais_temperatures: int | None = None,
    seed: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """W2, exact NLL (dx + dz <= 3) and ELBO of the checkpoint on ``data`` (data units: a file, an array, or
    ``val`` / ``test`` for a split of the run's own data), as a dict of plain numbers and strings.

    Every setting left at None takes the run's own (``callbacks.metrics`` of the config in the checkpoint), else
    the callback's default, so that the numbers are comparable with those logged in training.

    Args:
        n_samples: model samples and data points for W2.
        n_particles: K posterior particles per datum for the ELBO's mixture q (default: the training K).
        elbo_samples: S draws from each q_b.
        quadrature_points, box_margin: the quadrature grid per dimension, and the box's widening.
        ais_chains, ais_temperatures: AIS for log Z when dx + dz > 3 (the ELBO then inherits its upward bias).
        seed: the random stream of the model samples, posterior chains and ELBO draws (default: the run's
            evaluation stream at the checkpoint's step, which reproduces training's numbers).

    Besides ``elbo`` / ``iw_bound`` of the given data (fresh posterior particles, their chains started as
    ``infer`` starts them, or from N(0, I) when the training data cannot be rebuilt), the result holds
    ``train_elbo`` / ``train_iw_bound``: the bound that training logs as ``val/elbo`` and ``test/elbo``, which is
    computed on the persistent particles of the first ``n_elbo`` training data, not on the split evaluated
    (``elbo_note`` says so); with the default seed it reproduces the logged number (single-device runs).
    """
    given = {
        "n_samples": n_samples, "elbo_samples": elbo_samples, "quadrature_points": quadrature_points,
        "box_margin": box_margin, "ais_chains": ais_chains, "ais_temperatures": ais_temperatures,
    }
    check_positive(n_particles=n_particles, **given)
    model = load(ckpt, device)
    return score(model, data, load_data(model, data), given, n_particles, seed)


@torch.no_grad()
def score(
    model: LoadedModel, data: Any, x: Tensor, given: dict[str, Any], n_particles: int | None, seed: int | None,
) -> dict[str, Any]:
    """The metrics dict of ``inference.evaluate`` for data x ``[N, dx]`` (data units) named ``data``."""
    module, dev = model.module, model.module.device
    run = {**EVAL_DEFAULTS, "n_samples": module.long_chains["n_samples"]}
    run.update(((model.config or {}).get("callbacks") or {}).get("metrics") or {})
    settings = {k: v if v is not None else run[k] for k, v in given.items()}
    n_samples, elbo_samples = int(settings["n_samples"]), int(settings["elbo_samples"])
    train_x = _training_data(model)
    if train_x is None and len(x) < 2:
        raise InferenceError("the W2 floor needs at least 2 data rows when the training data cannot be rebuilt.")
    model_xz = module.sample_joint(n_samples, generator=model.generator(seed))
    model_x = module.to_data_units(model_xz[:, : model.dx]).cpu()
    pool_x = module.to_data_units(model.pool[:, : model.dx]).cpu() if model.pool is not None else None
    if train_x is not None:  # as in training: the data against independent training samples; the box covers them
        held = held_out_rows(x, min(n_samples, len(x), len(model_x)))
        pairs, reference_name, cover = reference_pairs(held, train_x), "training split", train_x
    else:  # no independent sample: random halvings of the data, W2 against the first pair's first half
        pairs, reference_name, cover = halving_pairs(held_out_rows(x, 2 * min(n_samples, len(x) // 2))), "halves", x
        held = pairs[0][0]
    n = len(held)
    distances = sample_distances(model_x, held, floor_distances(pairs), pool_x)
    out: dict[str, Any] = {k: float(v) for k, v in distances.items()}

    x_std = module.to_standard_units(x.to(dev))
    log_det = module.data_std.log().sum()
    box = None
    if model.dx + model.dz <= QUADRATURE_MAX_DIM:
        cover_std = module.to_standard_units(cover[:n_samples].to(dev))
        box = quadrature(
            module.energy, model.dx, model.dz, cover_std, model_xz, int(settings["quadrature_points"]),
            float(settings["box_margin"]), float(run["max_edge_mass"]), int(run["box_widenings"]),
        )
        nll = data_nll(module.energy, x_std, model.dz, box, log_det)
        out.update(nll=float(nll.mean()), quadrature_edge_mass=float(box["edge_mass"]), log_z=float(box["log_z"]))
    if model.dz > 0:
        if box is not None:
            log_z, out["log_z_method"] = box["log_z"], "quadrature"
        else:
            result = ais_log_partition(
                module.energy, model.dx, model.dz, n_chains=int(settings["ais_chains"]),
                n_temperatures=int(settings["ais_temperatures"]), generator=model.generator(seed, 3),
                kernel=module.long_chain_config().kernel,
            )
            log_z, out["log_z"], out["log_z_method"] = result.log_z, float(result.log_z), "ais"
        k = int(n_particles or module.posterior.n_particles)
        start = INFER_START if train_x is not None else "prior"  # neighbours need the run's training data
        bounds = posterior_bounds(
            module, x_std, None, log_z, elbo_samples, lambda key: model.generator(seed, key),
            lambda _, k_default: torch.from_numpy(infer(model, x, n_particles or k_default, seed=seed, start=start))
            .to(dev),
        )
        out.update({name: float((value - log_det.double()).mean()) for name, value in bounds.items()})
        out["elbo_particles"] = k
        if train_x is not None and model.particles is not None:
            n_elbo = min(int(run["n_elbo"]), len(train_x))
            train_std = module.to_standard_units(train_x[:n_elbo].to(dev))
            own = elbo(module.energy, train_std, model.particles[:n_elbo].to(dev), log_z, elbo_samples,
                       model.generator(seed, 4))
            out.update(
                train_elbo=float((own.elbo - log_det.double()).mean()),
                train_iw_bound=float((own.iw_bound - log_det.double()).mean()),
                elbo_note=ELBO_NOTE,
            )
    out.update(
        n_data=len(x), n_w2=n, w2_floor_reference=reference_name, step=model.step, checkpoint=str(model.path),
        data=str(data) if isinstance(data, str) or hasattr(data, "__fspath__") else "array",
    )
    return out


def _training_data(model: LoadedModel) -> Tensor | None:
    """The run's training split (data units), rebuilt from the checkpoint's config; None if it cannot be."""
    if not model.config or "data" not in model.config:
        return None
    try:
        return model.run_data().raw["train"]
    except (ValueError, OSError):  # the training file moved or is gone: the caller falls back to the data given
        return None
