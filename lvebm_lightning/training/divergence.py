"""The divergence guard: drop a training step whose particles, energies or gradients are not finite.

Every step the module asks ``nonfinite`` which of its tensors holds a NaN or an infinity on any rank (one
collective, ``strategy.reduce``, and one host synchronisation), and after the backward ``gradients_finite``
whether the parameter gradient norm is finite on every rank (``strategy.reduce_boolean_decision``). All ranks
see the same answers, so they skip the same steps and DDP's collectives stay matched. A skipped step drops the
update, re-initialises the non-finite particles and warns; ``policy="raise"``, or ``max_consecutive`` bad steps
in a row, stops the run with ``TrainingDiverged`` (``python train.py`` exits 1).
"""

from __future__ import annotations

import torch
from lightning.pytorch.strategies import Strategy
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

REMEDIES = (
    "Remedies: a smaller Langevin step size (sampler.*.step_size) or learning rate (model.lr), a larger alpha "
    "(model.alpha), spectral norm (model.energy.spectral_norm=true) or confinement (model.energy.gamma)."
)


class TrainingDiverged(RuntimeError):
    """Raised when training produced non-finite values for too many consecutive steps."""


class DivergenceGuard:
    """Counts bad steps and decides, on every rank alike, whether a step's update is dropped.

    Args:
        policy: ``skip`` (drop the update, re-initialise bad particles, warn) or ``raise`` (stop at once).
        max_consecutive: stop after this many bad steps in a row.
    """

    def __init__(self, policy: str = "skip", max_consecutive: int = 10) -> None:
        if policy not in ("skip", "raise"):
            raise ValueError(f"divergence.policy must be 'skip' or 'raise', got '{policy}'.")
        self.policy, self.max_consecutive = policy, int(max_consecutive)
        self.bad_steps = 0  # consecutive steps with non-finite values
        self.skipped_steps = 0  # total skipped updates

    @staticmethod
    def nonfinite(strategy: Strategy, tensors: dict[str, Tensor]) -> list[str]:
        """The names of ``tensors`` that hold a non-finite value on any rank."""
        flags = torch.stack([~torch.isfinite(t).all() for t in tensors.values()]).to(torch.float32)
        flags = strategy.reduce(flags, reduce_op="sum")
        return [name for name, bad in zip(tensors, flags.tolist()) if bad > 0]

    @staticmethod
    def gradients_finite(strategy: Strategy, grad_norm: Tensor) -> bool:
        """Whether the gradient norm is finite on every rank."""
        return strategy.reduce_boolean_decision(bool(torch.isfinite(grad_norm)), all=True)

    def bad_step(self, names: list[str], step: int) -> None:
        """Count a dropped update of step ``step``; raise ``TrainingDiverged`` when the policy says stop."""
        self.bad_steps += 1
        self.skipped_steps += 1
        message = (
            f"Non-finite {', '.join(names)} at step {step} ({self.bad_steps} bad step(s) in a row). {REMEDIES}"
        )
        if self.policy == "raise" or self.bad_steps >= self.max_consecutive:
            raise TrainingDiverged(message + " Training stopped.")
        rank_zero_warn(message + " Skipped the update.")

    def good_step(self) -> None:
        """An update went through: the run of bad steps is over."""
        self.bad_steps = 0

    def state_dict(self) -> dict[str, int]:
        return {"skipped_steps": self.skipped_steps, "bad_steps": self.bad_steps}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.bad_steps = int(state.get("bad_steps", 0))
