"""Conditional sampling: the missing coordinates of a datum and its latents, given the observed coordinates.

For a datum with observed coordinates x_o and missing ones x_m, the conditional law of the model is

    p(x_m, z | x_o) ∝ exp(-E(assemble(x_o, x_m), z)),

so no new kernel is needed (docs/design.md section 8): the particles are full pairs y = (x, z), and the energy handed
to the shared Langevin kernel is U(y) = E(where(missing, y_x, x_o), y_z), a closure over x_o. The observed slots
of y do not enter U, so they carry zero gradient; with the Metropolis correction their proposal is symmetric and
cancels from the acceptance ratio, so MALA leaves p(x_m, z | x_o) exactly invariant. The posterior z | x is the
special case with nothing missing. For an energy with a closed-form x | z (the decoder) the missing coordinates
integrate out instead: z | x_o moves alone and x_m | z is drawn exactly (docs/design.md section 1), unless the run
set ``sampler.collapsed=false``. Everything here is in standardised units; ``reconstruct`` converts.

Where the chains start decides more than how they move: ``reconstruct`` starts them at the training data nearest
in the observed coordinates by default (``particles.starts``), and checks that a second set from N(0, I) agrees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lvebm_lightning.data.files import read_array
from lvebm_lightning.energies.base import cached_weights
from lvebm_lightning.inference.checkpoint import load
from lvebm_lightning.langevin import LangevinConfig, langevin
from lvebm_lightning.metrics.mixing import set_agreement
from lvebm_lightning.particles.collapsed import collapsed_conditional, collapsible
from lvebm_lightning.particles.starts import ChainStarts, prior_starts


def conditional_sample(
    energy: Any,
    x_obs: Tensor,
    missing: Tensor,
    dz: int,
    n_samples: int,
    config: LangevinConfig,
    generator: torch.Generator | None = None,
    start: ChainStarts | None = None,
    collapsed: bool = False,
) -> tuple[Tensor, Tensor]:
    """Samples of (x_m, z) | x_o for every datum, by Langevin on the joint energy with x_o held fixed, or, with
    ``collapsed`` and an energy that declares a closed-form x | z, by Langevin on z | x_o with x_m integrated out
    and x_m | z drawn exactly (``particles.collapsed.collapsed_conditional``).

    Args:
        energy: E(x ``[..., dx]``, z ``[..., dz]``) -> ``[...]``.
        x_obs: data ``[B, dx]``; entries where ``missing`` is True are ignored (they may be NaN).
        missing: ``[B, dx]`` bool, True for an unobserved coordinate.
        dz: latent dimension.
        n_samples: S, chains per datum.
        config: the kernel (T, h, Metropolis).
        generator: source of the initial draws and of the Langevin noise.
        start: where the S chains start (``particles.starts``: x ``[B, S, dx]``, z ``[B, S, dz]``); None: x_m and
            z from N(0, I). The collapsed chain reads only its z.
        collapsed: the collapsed chain where the energy allows it (``LVEBMModule.collapsed``).

    Returns:
        x ``[B, S, dx]`` (observed coordinates equal to x_obs, missing ones sampled) and z ``[B, S, dz]``.
    """
    b, dx = x_obs.shape
    observed = torch.where(missing, torch.zeros_like(x_obs), x_obs).unsqueeze(1).expand(b, n_samples, dx)
    miss = missing.unsqueeze(1).expand(b, n_samples, dx)

    def assemble(y: Tensor) -> Tensor:
        return torch.where(miss, y[..., :dx], observed)

    def conditional_energy(y: Tensor) -> Tensor:
        return energy(assemble(y), y[..., dx:])

    start = start or prior_starts(observed[:, 0], missing, dz, n_samples, generator)
    if collapsed and collapsible(energy):
        return collapsed_conditional(energy, observed[:, 0], (~missing).to(x_obs), start.z.to(x_obs), config, generator)
    y0 = torch.cat([assemble(start.x.to(x_obs)), start.z.to(x_obs)], dim=-1)
    y, _ = langevin(conditional_energy, y0, config, generator)
    return assemble(y), y[..., dx:]


class ReconstructionError(ValueError):
    """Input that cannot be reconstructed (nothing missing, nothing observed, wrong width); one line with the fix."""


def read_partial(data: str | Path | np.ndarray, dx: int) -> np.ndarray:
    """Partially observed data ``[B, dx]`` (NaN marks a missing coordinate) from an array or a .npy / .npz / .csv
    file, checked: 2-D, dx columns, no infinities, every row with an observed coordinate, something missing."""
    if isinstance(data, (str, Path)):
        path = Path(data).expanduser()
        if not path.is_file():
            raise ReconstructionError(
                f"data file not found: {path}; pass data=<.npy/.npz/.csv with NaN where missing>."
            )
        x = read_array(path)
        source = str(path)
    else:
        x, source = np.asarray(data), "the data array"
    if x.dtype.kind not in "biuf":
        raise ReconstructionError(f"{source} holds values of dtype {x.dtype}, not numbers; save it as float32.")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1 and dx > 1 and x.shape[0] == dx:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != dx:
        raise ReconstructionError(
            f"{source} has shape {x.shape} but the model needs [B, {dx}] (one datum per row, NaN where missing)."
        )
    if np.isinf(x).any():
        raise ReconstructionError(f"{source} holds infinite values; mark missing coordinates with NaN instead.")
    missing = np.isnan(x)
    if not missing.any():
        raise ReconstructionError(
            f"{source} has no NaN entries, so nothing is missing; mark the coordinates to reconstruct with NaN "
            "(for latents of complete data use lvebm-infer)."
        )
    empty = np.flatnonzero(missing.all(axis=1))
    if len(empty):
        raise ReconstructionError(
            f"{source}: row {int(empty[0])} is all NaN ({len(empty)} such row(s)), nothing to condition on; drop "
            "those rows (for unconditional samples use lvebm-sample)."
        )
    return x


@torch.no_grad()
def reconstruct(
    ckpt: Any,
    data: str | Path | np.ndarray,
    n_samples: int = 100,
    *,
    n_steps: int | None = None,
    step_size: float | None = None,
    seed: int | None = None,
    start: str = "neighbours",
    check: str = "prior",
    device: str = "cpu",
) -> dict[str, np.ndarray]:
    """Sample the NaN coordinates of ``data`` ``[B, dx]`` (data units) and z, given the observed coordinates.

    The chains use the evaluation kernel of the run (T_eval steps of h_eval with its Metropolis setting) unless
    ``n_steps`` / ``step_size`` are given. They start where ``start`` says (``LoadedModel.chain_starts``:
    ``neighbours``, the training data nearest in the observed coordinates, or ``prior``); unless ``check`` is
    ``none``, S more chains run from ``check``'s starts and the two sets' reconstructions are compared per datum
    (``metrics.mixing``; only the first set's samples are returned).

    Returns ``samples`` ``[B, S, dx]`` (data units; observed coordinates copied), their ``mean`` ``[B, dx]``, the
    latents ``z`` ``[B, S, dz]``, the ``missing`` mask ``[B, dx]`` and, with a check, ``between_set_t``,
    ``t_threshold`` and ``disagree`` ``[B]``.
    """
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 1:
        raise ReconstructionError(f"n_samples must be a whole number >= 1, got {n_samples!r}.")
    model = load(ckpt, device)
    module = model.module
    x = read_partial(data, model.dx)
    missing = torch.from_numpy(np.isnan(x)).to(module.device)
    x_std = module.to_standard_units(torch.from_numpy(np.nan_to_num(x)).to(module.device, torch.float32))
    config = module.long_chain_config(n_steps, step_size)
    generator = model.generator(seed, 5)
    starts = model.start_sets(start, check, x_std, missing, n_samples, generator)
    with cached_weights(module.energy):
        xs, z = conditional_sample(
            module.energy, x_std, missing, model.dz, starts.x.shape[1], config, generator, starts, module.collapsed
        )
    samples = torch.where(missing.unsqueeze(1), module.to_data_units(xs), torch.from_numpy(x).to(xs).unsqueeze(1))
    out = {
        "samples": samples[:, :n_samples].cpu().numpy(),
        "mean": samples[:, :n_samples].mean(1).cpu().numpy(),
        "z": z[:, :n_samples].cpu().numpy(),
        "missing": missing.cpu().numpy(),
    }
    if check != "none":
        out.update(set_agreement(samples, n_samples, missing).arrays())
    return out
