"""The compiled path of the Langevin kernel (``LangevinConfig.compile``).

The chain is the eager one (``langevin.langevin``) with each step function of ``langevin_steps`` compiled
as one graph: ``torch.compile(step, fullgraph=True, dynamic=False)``, the gradient taken by
``torch.func.grad_and_value`` of U with respect to the particles, so that forward, input-gradient backward and
update fuse into one graph with fixed shapes. The step is a pure function of the state (y, U, grad U,
acceptance sum), the step size h (a 0-d tensor, so an annealed h does not recompile) and the step's noise,
which is drawn from the generator just before the call, in the eager path's order; the same noise therefore
gives the same samples to float tolerance. Nothing inside the chain reads a tensor on the host.

- The first step runs eagerly. Under ``parametrize.cached()`` (spectral norm) it computes the normalised weights
  once, so the compiled steps read them as plain tensors: once per chain, never per step.
- On CUDA the step is compiled with ``mode="reduce-overhead"``: each step is a replayed CUDA graph (no kernel
  launches from Python), ``torch.compiler.cudagraph_mark_step_begin`` marks each step, and the result is cloned
  out of the graph's memory pool.
- Under DDP the inner loops already call the energy network directly (not through the DDP wrapper), so the
  compiled graph never meets DDP's hooks.
- Where compilation fails (no C++ compiler, an energy dynamo cannot trace), one warning is issued and that
  step function runs eagerly from then on, consuming the same noise.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from lvebm_lightning.langevin import EnergyFn, LangevinConfig, energy_and_grad, mean_acceptance, network_precision
from lvebm_lightning.langevin_steps import STEPS, ChainState, GradFn, StepFn

_COMPILED: dict[tuple[str, str], Callable[..., ChainState]] = {}
_FAILED: set[tuple[str, str]] = set()


def functional_grad(energy: EnergyFn, autocast: bool) -> GradFn:
    """y -> (U(y), grad_y U(y)) by ``torch.func.grad_and_value``: traceable, no parameter gradients."""

    def total(y: Tensor) -> tuple[Tensor, Tensor]:
        with network_precision(y, autocast):
            u = energy(y)
        u = u.to(y.dtype)
        return u.sum(), u

    def grad_fn(y: Tensor) -> tuple[Tensor, Tensor]:
        grad, (_, u) = torch.func.grad_and_value(total, has_aux=True)(y)
        return u, grad

    return grad_fn


def _compiled_step(kernel: str, mode: str) -> Callable[..., ChainState]:
    key = (kernel, mode)
    if key not in _COMPILED:
        step: StepFn = STEPS[kernel].update
        _COMPILED[key] = torch.compile(step, fullgraph=True, dynamic=False, mode=mode)
    return _COMPILED[key]


def compiled_langevin(
    energy: EnergyFn, y: Tensor, config: LangevinConfig, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """``langevin(energy, y, config, generator)`` with compiled steps (module docstring); same arguments and results."""
    step = STEPS[config.kernel]
    mode = "reduce-overhead" if y.is_cuda else "default"
    key = (config.kernel, mode)

    def eager_grad(v: Tensor) -> tuple[Tensor, Tensor]:
        return energy_and_grad(energy, v, config.autocast)

    traced_grad = functional_grad(energy, config.autocast)
    sizes = config.step_sizes()
    h = torch.tensor(sizes, device=y.device, dtype=y.dtype)
    state = step.init(eager_grad, y)
    noise, uniform = step.draw(y, generator)
    state = step.update(eager_grad, state, sizes[0], noise, uniform, config.grad_clip)
    for t in range(1, config.n_steps):
        noise, uniform = step.draw(y, generator)
        if key in _FAILED:
            state = step.update(eager_grad, state, sizes[t], noise, uniform, config.grad_clip)
            continue
        try:
            if y.is_cuda:
                torch.compiler.cudagraph_mark_step_begin()
            with torch.no_grad():  # one grad mode for every call site, so it never triggers a recompile
                state = _compiled_step(*key)(traced_grad, state, h[t], noise, uniform, config.grad_clip)
        except Exception as err:  # noqa: BLE001 - any compiler failure falls back to the same eager step
            _FAILED.add(key)
            first_line = (str(err).strip().splitlines() or [""])[0][:200]
            warnings.warn(
                f"lvebm: torch.compile of the {config.kernel} Langevin step failed ({type(err).__name__}: "
                f"{first_line}); running it eagerly. Set sampler.compile=false to silence this.",
                stacklevel=2,
            )
            state = step.update(eager_grad, state, sizes[t], noise, uniform, config.grad_clip)
    if y.is_cuda:
        state = ChainState(*(None if v is None else v.clone() for v in state))
    return state.y, mean_acceptance(step, state, config.n_steps)
