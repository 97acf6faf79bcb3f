"""A step function registered by name reaches every chain: training (both particle systems), the long chains,
inference, reconstruction and AIS. The registered step is ULA with a counter of the batch shapes it moved, so each
path is seen to call it."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from lvebm_lightning.langevin import STEPS, register_step
from lvebm_lightning.langevin.steps import ula_step
from lvebm_lightning.metrics.ais import ais_log_partition
from lvebm_lightning.training.run import train

CALLS: Counter[tuple[int, ...]] = Counter()


def counting_step(grad_fn, state, h, noise, uniform, grad_clip):
    CALLS[tuple(state.y.shape)] += 1
    return ula_step(grad_fn, state, h, noise, uniform, grad_clip)


@pytest.fixture(scope="module", autouse=True)
def counting_kernel():
    register_step("counting_ula", counting_step, adjusted=False)
    yield
    STEPS.pop("counting_ula")


@pytest.mark.slow
def test_a_registered_step_runs_every_chain(make_cfg, tmp_path):
    cfg = make_cfg(
        "sampler.posterior.kernel=counting_ula", "sampler.negative.kernel=counting_ula", "trainer.max_steps=2",
        "trainer.val_check_interval=2", "data.batch_size=32", "sampler.negative.batch_size=16", "logger=csv",
        "test=false", "data=pendulum", "model/energy=decoder", "model.dz=2", "sampler.collapsed=false",
    )
    CALLS.clear()
    train(cfg)
    dx, dz = 16, 2
    assert CALLS[(32, 1, dz)] >= 2 * cfg.sampler.posterior.n_steps  # positive phase: [B, K, dz]
    assert CALLS[(16, dx + dz)] >= 2 * cfg.sampler.negative.n_steps  # negative pool: [B_neg, dx + dz]
    assert CALLS[(cfg.sampler.long_chains.n_samples, dx + dz)] >= cfg.sampler.long_chains.n_steps  # long chains

    from lvebm_lightning.inference import infer, load, reconstruct

    model = load(next((tmp_path / "run" / "checkpoints").glob("last.ckpt")))
    assert model.module.long_chain_config().kernel == "counting_ula"
    x = model.run_data().raw["test"][:3].numpy()
    CALLS.clear()
    infer(model, x, n_particles=4, n_steps=3, start="prior")
    assert CALLS[(3, 4, dz)] == 3  # conditional chains [B, K, dz]
    partial = x.copy()
    partial[:, dx // 2:] = np.nan
    CALLS.clear()
    reconstruct(model, partial, n_samples=5, n_steps=3, start="prior", check="none")
    assert CALLS[(3, 5, dx + dz)] == 3  # (x_m, z) chains [B, S, dx + dz]
    CALLS.clear()
    kernel = model.module.long_chain_config().kernel
    ais_log_partition(model.module.energy, dx, dz, n_chains=8, n_temperatures=3, n_mala_steps=1, kernel=kernel,
                      adapt_step_size=False, generator=torch.Generator().manual_seed(0))
    assert CALLS[(8, dx + dz)] >= 1  # the moves at the inner temperatures

