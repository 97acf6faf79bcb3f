"""Model samples and posterior particles of a loaded checkpoint (``lvebm-sample``, ``lvebm-infer``).

- **Model samples** are fresh joint chains from N(0, I) moved by T_eval Langevin steps of size h_eval (the
  ``sampler.long_chains`` settings of training), the distribution that the validation W2 measures; ``source="pool"``
  returns the persistent negative pool instead (its state at the checkpoint).
- **Posterior particles** are K fresh conditional chains per datum, z <- z - h grad_z E(x_b, z) + sqrt(2h) xi,
  T_eval steps of the training posterior step size h_z unless given, started from N(0, I) (``start="prior"``) or,
  for a checkpoint of the persistent method, from the persistent particles of the training data nearest to x_b
  (``start="neighbours"``, ``neighbour_start``): the store amortises inference. Both target p(z | x_b); the
  neighbours' particles start the chains in the modes that training found for similar data, where chains from
  N(0, I) can stay in a minor mode (docs/design.md, "Where chains start").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lvebm_lightning.inference.checkpoint import InferenceError, LoadedModel, check_positive, load, load_data
from lvebm_lightning.inference.options import STARTS

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
    start: str = "prior",
    device: str = "cpu",
) -> np.ndarray:
    """Posterior particles ``[B, K, dz]`` of z | x_b for data ``[B, dx]`` (data units; a file, an array, or
    ``val`` / ``test`` for a split of the run's own data): K fresh conditional chains per datum.

    Args:
        n_particles: K, particles per datum.
        n_steps, step_size: T and h of the conditional chains (default: T_eval and the posterior h_z).
        seed: the chains' random stream (default: the run's evaluation stream at the checkpoint's step).
        start: ``prior`` (chains from N(0, I)) or ``neighbours`` (from the persistent particles of the K nearest
            training data, ``neighbour_start``; checkpoints of the persistent method only).
    """
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
    if start == "neighbours" and model.particles is None:
        raise InferenceError(
            f"{model.path} holds no persistent posterior particles (only sampler.posterior.kind=persistent keeps "
            "them), so chains cannot start from the training data's; use start=prior."
        )
    x = load_data(model, data)
    x_std = model.module.to_standard_units(x.to(model.module.device))
    generator = model.generator(seed, 1)
    rows = max(1, CHUNK // n_particles)
    # Every datum's starting points at once (its checks before any chain runs), then chunked with the data.
    starts = neighbour_start(model, x_std, n_particles).split(rows) if start == "neighbours" else None
    z = [
        model.module.infer_standardised(
            chunk, n_particles, n_steps, step_size, generator, z_start=None if starts is None else starts[i]
        )
        for i, chunk in enumerate(x_std.split(rows))
    ]
    return torch.cat(z).cpu().numpy()


def neighbour_start(model: LoadedModel, x_std: Tensor, n_particles: int) -> Tensor:
    """Starting points ``[B, K, dz]`` for the chains of standardised data ``[B, dx]``: the persistent particles of
    the training data nearest to each x_b (Euclidean, standardised units), all K' particles of each of the
    ceil(K / K') nearest data in order of distance, the first K of them."""
    assert model.particles is not None, "neighbour_start needs a checkpoint of the persistent method"
    particles = model.particles.to(x_std.device)  # [N, K', dz], row i: training datum i
    train_std = model.module.to_standard_units(model.run_data().raw["train"].to(x_std.device))
    if particles.shape[0] != train_std.shape[0]:
        raise InferenceError(
            f"{model.path} holds particles of {particles.shape[0]} training data but its config rebuilds "
            f"{train_std.shape[0]}; the data behind the run changed, so use start=prior."
        )
    n_data, per_datum = particles.shape[:2]
    if n_particles > n_data * per_datum:
        raise InferenceError(
            f"n_particles={n_particles} chains per datum but the store holds {n_data * per_datum} particles in all; "
            f"ask for at most {n_data * per_datum} or use start=prior."
        )
    nearest = nearest_rows(x_std, train_std, -(-n_particles // per_datum))  # [B, ceil(K / K')]
    return particles[nearest].flatten(1, 2)[:, :n_particles].to(x_std.dtype)


def nearest_rows(query: Tensor, reference: Tensor, k: int, budget: int = 2**22) -> Tensor:
    """Indices ``[B, k]`` of the k rows of ``reference`` ``[N, d]`` nearest to each row of ``query`` ``[B, d]``,
    nearest first. Distances are computed for blocks of about ``budget / B`` reference rows at a time and each
    block's k nearest merged with the best so far, so memory stays about ``budget`` distances (16 MiB by default)
    plus O(B k), whatever N and B."""
    k = min(k, reference.shape[0])
    block = max(k, budget // max(1, query.shape[0]))
    best_d = torch.empty((query.shape[0], 0), device=query.device)
    best_i = torch.empty((query.shape[0], 0), dtype=torch.long, device=query.device)
    for lo in range(0, reference.shape[0], block):
        d, i = torch.cdist(query, reference[lo : lo + block]).topk(
            min(k, reference[lo : lo + block].shape[0]), dim=1, largest=False
        )
        d, i = torch.cat([best_d, d], 1), torch.cat([best_i, lo + i], 1)
        best_d, order = d.topk(min(k, d.shape[1]), dim=1, largest=False)
        best_i = i.gather(1, order)
    return best_i
