"""Energy networks E_theta(x, z), p(x, z) = exp(-E(x, z)) / Z, mirroring ``conf/model/energy/``."""

from lvebm_lightning.energies.base import Energy, cached_weights, on_pairs
from lvebm_lightning.energies.conv import ConvEnergy
from lvebm_lightning.energies.decoder import DecoderEnergy
from lvebm_lightning.energies.mlp import MLPEnergy

__all__ = ["ConvEnergy", "DecoderEnergy", "Energy", "MLPEnergy", "cached_weights", "on_pairs"]
