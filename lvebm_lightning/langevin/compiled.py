"""The compiled path of the Langevin kernel (``LangevinConfig.compile``).

The chain is the eager one (``langevin.kernel.langevin``) with its steps run in blocks of up to ``BLOCK`` steps of a
step function of ``langevin.steps``, each block compiled as one graph: ``torch.compile(block, fullgraph=True,
dynamic=False)``, the gradient taken by ``torch.func.grad_and_value`` of U with respect to the particles, so that
forward, input-gradient backward and update of every step of the block fuse into one graph with fixed shapes. A
block is a pure function of the state (y, U, grad U, acceptance sum), its step sizes h ``[b]`` (a tensor, so an
annealed h does not recompile) and its noise ``[b, ..., d]`` (and uniforms ``[b, ...]``), drawn from the generator
just before the call, step by step in the eager path's order; the same noise therefore gives the same samples to
float tolerance. The steps are cut into whole blocks of ``BLOCK`` and one shorter block for what is left, so a
chain of T compiled steps makes at most two block graphs per shape, and one when BLOCK divides T (the defaults:
T_z = 10, T_n = 50, T_eval = 4000; with cached spectral-norm weights ULA compiles T - 1 steps, below). Nothing
inside the chain reads a tensor on the host. Blocks amortise the per-call overhead (guards, wrappers, the noise
stack; about 0.15 ms a call on this project's CPUs, measured with a tiny network) that
bounds small batches: at width 128, batch 256 a block of 5 ran 1.14-1.17x the one-step graph
(docs/benchmarks.md "Inner-loop speed"), at the price of a longer first compilation.

- The start: an adjusted step (MALA) keeps U and grad U of the current point in its state, evaluated at the start
  by a graph of its own (``Step.init``, compiled); an unadjusted one (ULA) evaluates nothing there, so all T steps
  run in the blocks. Under ``parametrize.cached()`` (spectral norm) one eager evaluation comes first instead (MALA's
  start, or ULA's first step): it computes the normalised weights once, so the compiled steps read them as plain
  tensors: once per chain, never per step.
- On CUDA the block is compiled with ``mode="reduce-overhead"``: each block is a replayed CUDA graph (no kernel
  launches from Python), ``torch.compiler.cudagraph_mark_step_begin`` marks each call, and every graph's outputs
  are cloned out of its memory pool (``_owned``) before anything reads them, since the next replay overwrites it.
- Under DDP the inner loops already call the energy network directly (not through the DDP wrapper), so the
  compiled graph never meets DDP's hooks.
- Every step function's blocks share one code object, so dynamo's cache of it holds one graph per kernel,
  block length, shape and energy: a process that meets many shapes (benchmarks/speed.py, several models in one
  process) needs more than dynamo's default limit of 8, past which ``fullgraph=True`` fails and the chain would
  drop to eager. Chains run with the limit raised to ``RECOMPILE_LIMIT``, inside a
  ``torch._dynamo.config.patch`` that leaves the user's own setting alone outside the chain.
- Where compilation fails (no C++ compiler, an energy dynamo cannot trace), one warning is issued and that
  step function runs eagerly from then on, consuming the same noise (a failed block runs its drawn noise eagerly).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn.utils import parametrize

from lvebm_lightning.langevin.config import LangevinConfig
from lvebm_lightning.langevin.gradients import EnergyFn, energy_and_grad, functional_grad
from lvebm_lightning.langevin.steps import STEPS, ChainState, GradFn, Step, StepFn, mean_acceptance

BLOCK = 5  # steps per compiled graph
RECOMPILE_LIMIT = 128  # graphs kept per code object while a chain runs (dynamo's default, 8, is too few)
_COMPILED: dict[tuple[str, str, int], Callable[..., ChainState]] = {}
_FAILED: set[tuple[str, str]] = set()


def steps_block(update: StepFn, n: int) -> Callable[..., ChainState]:
    """``n`` steps of ``update`` as one function: step i takes h ``hs[i]``, noise ``noises[i]`` and uniforms
    ``uniforms[i]`` (None for an unadjusted step)."""

    def block(grad_fn: GradFn, state: ChainState, hs: Tensor, noises: Tensor, uniforms: Tensor | None,
              grad_clip: float | None) -> ChainState:
        for i in range(n):
            state = update(grad_fn, state, hs[i], noises[i], None if uniforms is None else uniforms[i], grad_clip)
        return state

    return block


def _compiled_block(kernel: str, mode: str, n: int) -> Callable[..., ChainState]:
    key = (kernel, mode, n)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(steps_block(STEPS[kernel].update, n), fullgraph=True, dynamic=False, mode=mode)
    return _COMPILED[key]


def _compiled_start(kernel: str, mode: str) -> Callable[..., ChainState]:
    """The step's initial state (U and grad U at the start, for an adjusted step) as one graph."""
    key = (kernel, mode, 0)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(STEPS[kernel].init, fullgraph=True, dynamic=False, mode=mode)
    return _COMPILED[key]


def compiled_langevin(
    energy: EnergyFn, y: Tensor, config: LangevinConfig, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """``langevin(energy, y, config, generator)`` with compiled steps (module docstring); same arguments and results."""
    if config.n_steps == 0:
        return y.detach(), torch.ones((), device=y.device, dtype=y.dtype)
    step = STEPS[config.kernel]
    mode = "reduce-overhead" if y.is_cuda else "default"
    key = (config.kernel, mode)

    def eager_grad(v: Tensor) -> tuple[Tensor, Tensor]:
        return energy_and_grad(energy, v, config.autocast)

    traced_grad = functional_grad(energy, config.autocast)
    sizes = config.step_sizes()
    h = torch.tensor(sizes, device=y.device, dtype=y.dtype)
    t = 0
    with torch._dynamo.config.patch(recompile_limit=max(RECOMPILE_LIMIT, torch._dynamo.config.recompile_limit)):
        if getattr(parametrize, "_cache_enabled", 0):  # cached (spectral-norm) weights: computed by one eager pass
            state = step.init(eager_grad, y)
            if not step.adjusted:  # nothing evaluated yet: the first step runs eagerly
                noise, uniform = step.draw(y, generator)
                state = step.update(eager_grad, state, sizes[0], noise, uniform, config.grad_clip)
                t = 1
        else:
            state = _start(step, key, traced_grad, eager_grad, y, config)
        # Contiguous, as the blocks return them: an eager gradient can be a strided view (grad z of E([x, z]) is
        # a slice of grad [x, z]), and a stride that differs from the next call's would compile the block again.
        state = ChainState(*(v if v is None else v.contiguous() for v in state))
        state = _compiled_steps(step, key, traced_grad, eager_grad, state, h, sizes, t, y, config, generator)
    return state.y, mean_acceptance(step, state, config.n_steps)


def _owned(state: ChainState) -> ChainState:
    """A graph's outputs, cloned out of its CUDA-graph memory pool on CUDA (``reduce-overhead``), where the next
    replay would overwrite them: the next block, an eager fallback and the caller then read tensors of their own.
    A no-op on the CPU, where the outputs are ordinary tensors."""
    if not state.y.is_cuda:
        return state
    return ChainState(*(None if v is None else v.clone() for v in state))


def _start(
    step: Step, key: tuple[str, str], traced_grad: GradFn, eager_grad: GradFn, y: Tensor, config: LangevinConfig
) -> ChainState:
    """The chain's initial state: compiled where the step evaluates anything (MALA), eager on failure."""
    if not step.adjusted or key in _FAILED:
        return step.init(eager_grad, y)
    try:
        if y.is_cuda:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.no_grad():
            return _owned(_compiled_start(*key)(traced_grad, y))
    except Exception as err:  # noqa: BLE001 - any compiler failure falls back to the eager start
        _fail(key, config, err)
        return step.init(eager_grad, y)


def _fail(key: tuple[str, str], config: LangevinConfig, err: Exception) -> None:
    """Run this step function eagerly from now on, after one warning."""
    _FAILED.add(key)
    first_line = (str(err).strip().splitlines() or [""])[0][:200]
    warnings.warn(
        f"lvebm: torch.compile of the {config.kernel} Langevin step failed ({type(err).__name__}: {first_line}); "
        "running it eagerly. Set sampler.compile=false to silence this.",
        stacklevel=5,
    )


def block_lengths(n_steps: int) -> list[int]:
    """``n_steps`` cut into whole blocks of ``BLOCK`` and one shorter block for the rest (none when it divides)."""
    whole, rest = divmod(n_steps, BLOCK)
    return [BLOCK] * whole + ([rest] if rest else [])


def _compiled_steps(
    step: Step, key: tuple[str, str], traced_grad: GradFn, eager_grad: GradFn, state: ChainState, h: Tensor,
    sizes: list[float], t: int, y: Tensor, config: LangevinConfig, generator: torch.Generator | None,
) -> ChainState:
    """Steps t .. T-1 of ``compiled_langevin`` in compiled blocks (``block_lengths``), eager on failure."""
    for n in block_lengths(config.n_steps - t):
        draws = [step.draw(y, generator) for _ in range(n)]  # the eager order: noise, then uniforms, per step
        if key not in _FAILED:
            noises = torch.stack([d[0] for d in draws])
            uniforms = None if draws[0][1] is None else torch.stack([d[1] for d in draws])
            try:
                if y.is_cuda:
                    torch.compiler.cudagraph_mark_step_begin()
                with torch.no_grad():  # one grad mode for every call site, so it never triggers a recompile
                    block = _compiled_block(*key, n)
                    state = _owned(block(traced_grad, state, h[t : t + n], noises, uniforms, config.grad_clip))
                t += n
                continue
            except Exception as err:  # noqa: BLE001 - any compiler failure falls back to the same eager steps
                _fail(key, config, err)
        for i, (noise, uniform) in enumerate(draws):
            state = step.update(eager_grad, state, sizes[t + i], noise, uniform, config.grad_clip)
        t += n
    return state
