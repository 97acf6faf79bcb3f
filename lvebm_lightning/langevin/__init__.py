"""The Langevin kernel shared by every particle system: step functions by name, the loop, the compiled path."""

from lvebm_lightning.langevin.config import LangevinConfig
from lvebm_lightning.langevin.gradients import EnergyFn, energy_and_grad
from lvebm_lightning.langevin.kernel import langevin
from lvebm_lightning.langevin.steps import STEPS, ChainState, Step, register_step

__all__ = ["STEPS", "ChainState", "EnergyFn", "LangevinConfig", "Step", "energy_and_grad", "langevin", "register_step"]
