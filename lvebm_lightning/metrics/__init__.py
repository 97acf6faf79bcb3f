"""Evaluation maths as pure torch functions: W2 and sliced W2, quadrature log-likelihood, ELBO, AIS log Z."""

from lvebm_lightning.metrics.ais import AisResult, ais_log_partition, annealing_schedule
from lvebm_lightning.metrics.elbo import (
    ElboResult,
    default_bandwidths,
    elbo,
    mixture_log_prob,
    mixture_sample,
    silverman_bandwidth,
)
from lvebm_lightning.metrics.quadrature import (
    QuadratureResult,
    batched_energy,
    choose_box,
    log_marginal,
    log_partition,
    make_grid,
)
from lvebm_lightning.metrics.wasserstein import sliced_w2, w2, w2_floor

__all__ = [
    "AisResult",
    "ElboResult",
    "QuadratureResult",
    "ais_log_partition",
    "annealing_schedule",
    "batched_energy",
    "choose_box",
    "default_bandwidths",
    "elbo",
    "log_marginal",
    "log_partition",
    "make_grid",
    "mixture_log_prob",
    "mixture_sample",
    "silverman_bandwidth",
    "sliced_w2",
    "w2",
    "w2_floor",
]
