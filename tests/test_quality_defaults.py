"""The evaluation kernel samples the law the pool is trained against, and the defaults stay put.

A stiff Gaussian energy E(y) = a |y|^2 / 2 with a = 40 and h = 0.04 separates the two kernels clearly:
unadjusted Langevin is stationary at variance 1 / (a (1 - h a / 2)) = 0.125, five times the exact 1 / a = 0.025
that MALA keeps. Tolerances are 5 standard errors of a variance from n independent chains, sd = v sqrt(2 / n).
"""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from lvebm_lightning.training.run import build_model

PRECISION, STEP, N_CHAINS, N_STEPS = 40.0, 0.04, 4000, 300


class StiffGaussian(nn.Module):
    """E(x, z) = a (|x|^2 + |z|^2) / 2."""

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return 0.5 * PRECISION * ((x * x).sum(-1) + (z * z).sum(-1))


def _module(make_cfg, *overrides: str):
    cfg = make_cfg(f"sampler.negative.step_size={STEP}", *overrides)
    model = build_model(cfg, instantiate(cfg.data).prepare())
    model.energy = StiffGaussian()
    return model


@pytest.mark.parametrize(
    ("overrides", "kernel"),
    [
        (("sampler.negative.kernel=mala",), "mala"),
        (("sampler.negative.kernel=ula",), "ula"),
        (("sampler.negative.kernel=mala", "sampler.long_chains.kernel=ula"), "ula"),
        (("sampler.negative.kernel=ula", "sampler.long_chains.kernel=mala"), "mala"),
    ],
)
def test_evaluation_chains_use_the_negative_kernel_unless_told_otherwise(make_cfg, overrides, kernel):
    model = _module(make_cfg, *overrides)
    assert model.long_chain_config().kernel == kernel
    xz = model.sample_joint(N_CHAINS, n_steps=N_STEPS, generator=torch.Generator().manual_seed(0))
    variance = float(xz.var(0).mean())
    exact = 1.0 / PRECISION
    ula = 1.0 / (PRECISION * (1.0 - STEP * PRECISION / 2.0))
    # mean over dx + dz coordinates: the standard error shrinks by sqrt(dx + dz)
    se = math.sqrt(2.0 / (N_CHAINS * xz.shape[1]))
    target = exact if kernel == "mala" else ula
    assert abs(variance / target - 1.0) < 5 * se, (variance, target)


def test_posterior_inference_uses_the_posterior_kernel(make_cfg):
    model = _module(make_cfg, "sampler.posterior.kernel=mala", "sampler.negative.kernel=ula")
    x = torch.zeros(N_CHAINS, model.dx)
    z = model.infer_standardised(x, 1, n_steps=N_STEPS, step_size=STEP, generator=torch.Generator().manual_seed(1))
    se = math.sqrt(2.0 / N_CHAINS)
    assert abs(float(z.var()) * PRECISION - 1.0) < 5 * se
