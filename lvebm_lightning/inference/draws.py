"""Model samples and posterior particles of a loaded checkpoint (``lvebm-sample``, ``lvebm-infer``).

- **Model samples** are fresh joint chains from N(0, I) moved by T_eval Langevin steps of size h_eval (the
  ``sampler.long_chains`` settings of training), the distribution that the validation W2 measures; ``source="pool"``
  returns the persistent negative pool instead (its state at the checkpoint).
- **Posterior particles** are K fresh conditional chains per datum, z <- z - h grad_z E(x_b, z) + sqrt(2h) xi,
  T_eval steps of the training posterior step size h_z unless given, started from the persistent particles of
  the training data nearest to x_b (``start="neighbours"``, ``particles.starts``: the store amortises inference)
  or from N(0, I) (``start="prior"``). Both target p(z | x_b); the neighbours' particles start the chains in the
  modes that training found for similar data, where chains from N(0, I) can stay in a minor mode
  (docs/design.md, "Where chains start"). ``infer_checked`` also runs a second set from independent starts and
  reports per datum whether the two agree (``metrics.mixing``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lvebm_lightning.inference.checkpoint import InferenceError, LoadedModel, check_positive, load, load_data
from lvebm_lightning.inference.options import INFER_START, STARTS
from lvebm_lightning.metrics.mixing import set_agreement

CHUNK = 65536
"""Chains moved at once (sample and infer move larger requests chunk by chunk, from one generator)."""


@torch.no_grad()
def sample(
    ckpt: str | Path | LoadedModel,
    n: int | None = 10_000,
    *,
    pairs: bool = False,
    source: str = "chains",
    n_steps: int | None = None,
    step_size: float | None = None,
    seed: int | None = None,
    device: str = "cpu",
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Model samples x ``[n, dx]`` (data units), or (x, z) with z ``[n, dz]`` when ``pairs``.

    Args:
        n: how many; with ``source="pool"`` at most the pool size M, None for the whole pool.
        pairs: also return the latents z of each sample.
        source: ``chains`` (fresh long chains from N(0, I): the model's own distribution) or ``pool`` (the
            persistent negative pool saved in the checkpoint).
        n_steps, step_size: T_eval and h_eval of the chains (default: the run's ``sampler.long_chains``).
        seed: the chains' random stream (default: the run's evaluation stream at the checkpoint's step).
    """
    if source not in ("chains", "pool"):
        raise InferenceError(f"source must be chains or pool, got {source!r}.")
    if n is None and source == "chains":
        raise InferenceError("n (how many samples) is needed for source=chains; n=null means all only for the pool.")
    if n is not None and not isinstance(n, int):
        raise InferenceError(f"n must be a whole number, got {n!r}.")
    check_positive(n=n, step_size=step_size)
    if n_steps is not None and (not isinstance(n_steps, int) or n_steps < 0):
        raise InferenceError(f"n_steps must be a whole number >= 0, got {n_steps!r}.")
    model = load(ckpt, device)
    if source == "pool":
        if model.pool is None:
            raise InferenceError(f"{model.path} holds no negative pool; use source=chains.")
        if n is not None and n > model.pool.shape[0]:
            raise InferenceError(
                f"the checkpoint's pool holds {model.pool.shape[0]} pairs, fewer than n={n}; ask for at most "
                f"{model.pool.shape[0]} (or n=null for all) or use source=chains."
            )
        xz = model.pool[:n]
    else:
        generator = model.generator(seed)
        xz = torch.cat([
            model.module.sample_joint(min(CHUNK, n - start), n_steps, step_size, generator)
            for start in range(0, n, CHUNK)
        ])
    x = model.module.to_data_units(xz[:, : model.dx]).cpu().numpy()
    if not pairs:
        return x
    return x, xz[:, model.dx :].cpu().numpy()


@torch.no_grad()
def infer(
    ckpt: str | Path | LoadedModel,
    data: str | Path | np.ndarray | Tensor,
    n_particles: int = 64,
    *,
    n_steps: int | None = None,
    step_size: float | None = None,
    seed: int | None = None,
    start: str = INFER_START,
    device: str = "cpu",
) -> np.ndarray:
    """Posterior particles ``[B, K, dz]`` of z | x_b for data ``[B, dx]`` (data units; a file, an array, or
    ``val`` / ``test`` for a split of the run's own data): K fresh conditional chains per datum.

    Args:
        n_particles: K, particles per datum.
        n_steps, step_size: T and h of the conditional chains (default: T_eval and the posterior h_z).
        seed: the chains' random stream (default: the run's evaluation stream at the checkpoint's step).
        start: ``neighbours`` (chains from the persistent particles of the K nearest training data; an amortised
            checkpoint: its encoder's draws; a short-run one: N(0, I); ``LoadedModel.chain_starts``) or ``prior``
            (N(0, I)).
    """
    return infer_checked(
        ckpt, data, n_particles, n_steps=n_steps, step_size=step_size, seed=seed, start=start, check="none",
        device=device,
    )["z"]


@torch.no_grad()
def infer_checked(
    ckpt: str | Path | LoadedModel,
    data: str | Path | np.ndarray | Tensor,
    n_particles: int = 64,
    *,
    n_steps: int | None = None,
    step_size: float | None = None,
    seed: int | None = None,
    start: str = INFER_START,
    check: str = "prior",
    device: str = "cpu",
) -> dict[str, np.ndarray]:
    """``infer``, and unless ``check="none"`` K more chains per datum from ``check``'s starts whose posterior means
    are compared with the first set's (``metrics.mixing``): ``z`` ``[B, K, dz]`` (the first set) and, with a check,
    ``between_set_t``, ``t_threshold`` and ``disagree`` ``[B]``."""
    check_positive(n_particles=n_particles, step_size=step_size)
    if not isinstance(n_particles, int):
        raise InferenceError(f"n_particles must be a whole number, got {n_particles!r}.")
    if n_steps is not None and (not isinstance(n_steps, int) or n_steps < 0):
        raise InferenceError(f"n_steps must be a whole number >= 0, got {n_steps!r}.")
    if start not in STARTS:
        raise InferenceError(f"start must be one of {', '.join(STARTS)}, got {start!r}.")
    model = load(ckpt, device)
    if model.dz == 0:
        raise InferenceError(f"{model.path} is a model without latents (model.dz=0): there is no z to infer.")
    x = load_data(model, data)
    x_std = model.module.to_standard_units(x.to(model.module.device))
    generator = model.generator(seed, 1)
    nothing_missing = torch.zeros_like(x_std, dtype=torch.bool)
    # Every datum's starting points at once (their checks before any chain runs), then chunked with the data.
    z0 = model.start_sets(start, check, x_std, nothing_missing, n_particles, generator).z
    rows = max(1, CHUNK // z0.shape[1])
    z = torch.cat([
        model.module.infer_standardised(chunk, z0.shape[1], n_steps, step_size, generator, z_start=starts)
        for chunk, starts in zip(x_std.split(rows), z0.split(rows))
    ])
    out = {"z": z[:, :n_particles].cpu().numpy()}
    if check != "none":
        out.update(set_agreement(z, n_particles).arrays())
    return out
