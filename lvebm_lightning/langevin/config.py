"""The settings of one Langevin chain: the step function by name, h, T and the optional extras."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from lvebm_lightning.langevin.steps import STEPS


@dataclass(frozen=True)
class LangevinConfig:
    """Settings of one Langevin chain.

    Attributes:
        step_size: h > 0, the Euler-Maruyama step; the noise scale is sqrt(2 h), never set apart from h.
        n_steps: T, the number of steps.
        kernel: the step function by name, a key of ``langevin.steps.STEPS`` (``mala``, ``ula`` or one registered
            with ``register_step``). Whether the chain is Metropolis-adjusted follows from it (``metropolis``).
        grad_clip: if set, each particle's gradient is rescaled to at most this Euclidean norm (a guard for
            early training, when energies can be steep; it biases the chain, so leave it None for evaluation).
        final_step_size: if set, h is annealed geometrically from ``step_size`` to this value over the chain.
        compile: run the chain through the compiled path (``langevin.compiled``; eager if compilation fails).
        autocast: on CUDA, the energy network in bf16 autocast; particles and their updates stay float32.
    """

    step_size: float
    n_steps: int
    kernel: str = "mala"
    grad_clip: float | None = None
    final_step_size: float | None = None
    compile: bool = False
    autocast: bool = False

    def __post_init__(self) -> None:
        if self.kernel not in STEPS:
            raise ValueError(
                f"Langevin kernel must be one of {sorted(STEPS)}, got {self.kernel!r}; set sampler.*.kernel."
            )
        if not self.step_size > 0:
            raise ValueError(f"Langevin step_size must be > 0, got {self.step_size}; set a positive step size.")
        if self.n_steps < 0:
            raise ValueError(f"Langevin n_steps must be >= 0, got {self.n_steps}.")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"Langevin grad_clip must be > 0 or null, got {self.grad_clip}.")
        if self.final_step_size is not None and not self.final_step_size > 0:
            raise ValueError(f"Langevin final_step_size must be > 0 or null, got {self.final_step_size}.")

    @property
    def metropolis(self) -> bool:
        """Whether the kernel accepts or rejects its moves (exp(-U) exactly invariant at any h)."""
        return STEPS[self.kernel].adjusted

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> LangevinConfig:
        """The kernel of a ``sampler.posterior`` / ``sampler.negative`` entry (its other keys are ignored)."""
        return cls(**{f.name: entry[f.name] for f in fields(cls) if f.name in entry})

    def step_sizes(self) -> list[float]:
        """The step size of every step: constant, or geometric from ``step_size`` to ``final_step_size``."""
        if self.final_step_size is None or self.n_steps <= 1:
            return [self.step_size] * self.n_steps
        ratio = (self.final_step_size / self.step_size) ** (1.0 / (self.n_steps - 1))
        return [self.step_size * ratio**t for t in range(self.n_steps)]
