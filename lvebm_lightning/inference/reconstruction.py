"""Conditional sampling: the missing coordinates of a datum and its latents, given the observed coordinates.

For a datum with observed coordinates x_o and missing ones x_m, the conditional law of the model is

    p(x_m, z | x_o) ∝ exp(-E(assemble(x_o, x_m), z)),

so no new kernel is needed (docs/design.md section 8): the particles are full pairs y = (x, z), and the energy handed
to the shared Langevin kernel is U(y) = E(where(missing, y_x, x_o), y_z), a closure over x_o. The observed slots
of y do not enter U, so they carry zero gradient; with the Metropolis correction their proposal is symmetric and
cancels from the acceptance ratio, so MALA leaves p(x_m, z | x_o) exactly invariant. The posterior z | x is the
special case with nothing missing. Everything here is in standardised units; ``reconstruct`` converts.
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


def conditional_sample(
    energy: Any,
    x_obs: Tensor,
    missing: Tensor,
    dz: int,
    n_samples: int,
    config: LangevinConfig,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Samples of (x_m, z) | x_o for every datum, by Langevin on the joint energy with x_o held fixed.

    Args:
        energy: E(x ``[..., dx]``, z ``[..., dz]``) -> ``[...]``.
        x_obs: data ``[B, dx]``; entries where ``missing`` is True are ignored (they may be NaN).
        missing: ``[B, dx]`` bool, True for an unobserved coordinate.
        dz: latent dimension.
        n_samples: S, chains per datum, started from N(0, I) in the missing coordinates and in z.
        config: the kernel (T, h, Metropolis).
        generator: source of the initial draws and of the Langevin noise.

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

    y0 = torch.randn(b, n_samples, dx + dz, generator=generator, device=x_obs.device, dtype=x_obs.dtype)
    y0 = torch.cat([assemble(y0), y0[..., dx:]], dim=-1)
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
    device: str = "cpu",
) -> dict[str, np.ndarray]:
    """Sample the NaN coordinates of ``data`` ``[B, dx]`` (data units) and z, given the observed coordinates.

    The chains use the evaluation kernel of the run (T_eval steps of h_eval with its Metropolis setting) unless
    ``n_steps`` / ``step_size`` are given. Returns ``samples`` ``[B, S, dx]`` (data units; observed coordinates
    copied), their ``mean`` ``[B, dx]``, the latents ``z`` ``[B, S, dz]`` and the ``missing`` mask ``[B, dx]``.
    """
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 1:
        raise ReconstructionError(f"n_samples must be a whole number >= 1, got {n_samples!r}.")
    model = load(ckpt, device)
    module = model.module
    x = read_partial(data, model.dx)
    missing = torch.from_numpy(np.isnan(x)).to(module.device)
    x_std = module.to_standard_units(torch.from_numpy(np.nan_to_num(x)).to(module.device, torch.float32))
    config = module.long_chain_config(n_steps, step_size)
    with cached_weights(module.energy):
        xs, z = conditional_sample(
            module.energy, x_std, missing, model.dz, n_samples, config, model.generator(seed, 5)
        )
    samples = module.to_data_units(xs)
    samples = torch.where(missing.unsqueeze(1), samples, torch.from_numpy(x).to(samples).unsqueeze(1))
    return {
        "samples": samples.cpu().numpy(),
        "mean": samples.mean(1).cpu().numpy(),
        "z": z.cpu().numpy(),
        "missing": missing.cpu().numpy(),
    }
