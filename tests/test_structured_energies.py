"""The decoder-structured and the convolutional energies: their formulas, symmetries and the pendulum data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import ellipj, ellipk

from lvebm_lightning.data.systems import Pendulum, get_dataset
from lvebm_lightning.energies.conv import ConvEnergy
from lvebm_lightning.energies.decoder import DecoderEnergy


def test_decoder_energy_is_its_formula() -> None:
    torch.manual_seed(0)
    e = DecoderEnergy(dx=3, dz=2, width=16, depth=2, sigma=0.4, learn_sigma=True, gamma=0.1)
    x, z = torch.randn(5, 3), torch.randn(5, 2)
    expected = (0.5 * (z**2).sum(-1) + e.prior(z).squeeze(-1) + ((x - e.decode(z)) ** 2).sum(-1) / (2 * 0.4**2)
                + 0.05 * ((x**2).sum(-1) + (z**2).sum(-1)))
    assert torch.allclose(e(x, z), expected, atol=1e-5)
    assert e.log_sigma.requires_grad
    assert not DecoderEnergy(dx=3, dz=2, learn_sigma=False).log_sigma.requires_grad
    with pytest.raises(ValueError, match="dz >= 1"):
        DecoderEnergy(dx=3, dz=0)


def test_conv_energy_is_translation_invariant_and_broadcasts() -> None:
    torch.manual_seed(0)
    e = ConvEnergy(dx=16, dz=1, width=8, depth=2, gamma=0.1)
    x, z = torch.randn(6, 16), torch.randn(6, 1)
    shifted = x.reshape(6, 4, 4).roll((1, 3), (1, 2)).reshape(6, 16)
    assert torch.allclose(e(x, z), e(shifted, z), atol=1e-5)
    assert not torch.allclose(e(x, z), e(x.reshape(6, 4, 4).transpose(1, 2).reshape(6, 16) * 1.3, z))
    xk, zk = x.unsqueeze(1).expand(6, 3, 16), torch.randn(6, 3, 1)
    assert e(xk, zk).shape == (6, 3)
    assert torch.allclose(e(xk, zk)[:, 1], e(x, zk[:, 1]), atol=1e-5)
    with pytest.raises(ValueError, match="square lattice"):
        ConvEnergy(dx=15, dz=1)


def test_pendulum_trajectories_follow_the_exact_elliptic_solution() -> None:
    """From the turning point, sin(theta / 2) = k sn(K(m) - omega0 t | m), k^2 = m = H / 2 omega0^2."""
    system = Pendulum()
    energy = np.array([0.1, 0.9, 1.8])
    phase = np.array([0.0, 1.0, 4.0])
    period = system.period(energy)
    m = energy / 2.0
    tau = np.rint(phase / (2 * np.pi) * period / system.dt) * system.dt
    t = tau[:, None] + system.dt_obs * np.arange(system.n_obs)[None]
    sn = ellipj(ellipk(m)[:, None] - t, m[:, None])[0]
    exact = 2.0 * np.arcsin(np.sqrt(m)[:, None] * sn)
    assert np.abs(system.trajectories(energy, phase) - exact).max() < 1e-6
    # a full period later the pendulum is back where it started
    back = system.trajectories(energy, phase + 2 * np.pi)
    assert np.abs(back - system.trajectories(energy, phase)).max() < 2 * system.dt * 2.5


def test_pendulum_samples_and_latents() -> None:
    system = get_dataset("pendulum")
    x, latents = system.sample_with_latents(500, seed=0)
    assert x.shape == (500, 16) and x.dtype == np.float32 and latents.shape == (500, 2)
    assert np.array_equal(x, system.sample(500, seed=0))
    assert latents[:, 0].min() >= 0.1 and latents[:, 0].max() <= 1.8
    assert latents[:, 1].min() >= 0 and latents[:, 1].max() < 2 * math.pi
    # the amplitude bounds the angle: |theta| <= arccos(1 - H) up to the observation noise (5 sigma)
    amplitude = np.arccos(1 - latents[:, 0])
    assert (np.abs(x).max(1) <= amplitude + 5 * system.noise).all()
    assert system.observables(torch.from_numpy(x))["mean_energy"] > 0


def test_data_options_and_hidden_truth_reach_the_data_module() -> None:
    from lvebm_lightning.data.datamodule import LVEBMDataModule

    dm = LVEBMDataModule(name="pendulum", n_train=40, n_val=10, n_test=10, seed=4).prepare()
    x, latents = Pendulum().sample_with_latents(60, seed=4)
    assert torch.equal(dm.raw["test"], torch.from_numpy(x[50:]))
    assert torch.equal(dm.latents["val"], torch.from_numpy(latents[40:50]))
    assert LVEBMDataModule(name="double_well", n_train=5, n_val=2, n_test=2).prepare().latents == {}
    small = LVEBMDataModule(name="phi4", n_train=4, n_val=2, n_test=2, options={"side": 4}).prepare()
    assert small.dim == 16
    with pytest.raises(ValueError, match="dataset 'phi4' has no parameter 'sides'"):
        get_dataset("phi4", sides=4)


@pytest.mark.parametrize(
    ("choice", "target"),
    [("mlp", "lvebm_lightning.energies.mlp.MLPEnergy"), ("decoder", "lvebm_lightning.energies.decoder.DecoderEnergy"),
     ("conv", "lvebm_lightning.energies.conv.ConvEnergy")],
)
def test_the_energy_is_a_config_group_of_the_command_line(choice: str, target: str) -> None:
    from pathlib import Path

    from lvebm_lightning.config.compose import check_overrides

    conf = Path(__file__).resolve().parents[1] / "conf"
    data = ["data=phi4"] if choice == "conv" else []
    cfg = check_overrides(conf, "train", [f"model/energy={choice}", "model.dz=2", *data])
    assert cfg.model.energy._target_ == target
    assert check_overrides(conf, "train", []).model.energy._target_ == "lvebm_lightning.energies.mlp.MLPEnergy"


def test_an_unknown_energy_choice_names_the_options() -> None:
    from pathlib import Path

    from lvebm_lightning.config.compose import ConfigError, check_overrides

    conf = Path(__file__).resolve().parents[1] / "conf"
    with pytest.raises(ConfigError, match=r"model/energy=transformer.*conv.*decoder.*mlp"):
        check_overrides(conf, "train", ["model/energy=transformer"])
