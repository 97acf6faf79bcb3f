"""Each network of the config (the energies of ``conf/model/energy/``, the amortised encoder) is built with the
values its config gives, and is its formula with them.

The module is built from the composed config (``build_model``) with a value of its own for every setting of the
energy, unlike the defaults: width, depth and activation set the networks' layers, gamma the confinement
(gamma / 2)(|x|^2 + |z|^2), sigma the decoder's noise scale in |x - g(z)|^2 / (2 sigma^2) (learnt or fixed by
``learn_sigma``), and ``spectral_norm`` bounds every linear layer's largest singular value by 1. The formulas use
the constants of this file, never the config's values.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lvebm_lightning.training.run import build_model
from tests.conftest import compose_config
from tests.helpers.replay import chain

DX, DZ, WIDTH, DEPTH, GAMMA, SIGMA = 16, 2, 6, 3, 0.3, 0.35
COMMON = [f"model.dz={DZ}", f"model.energy.width={WIDTH}", f"model.energy.depth={DEPTH}",
          "model.energy.activation=elu", f"model.energy.gamma={GAMMA}"]


def built(tmp_path, energy: str, *overrides: str) -> nn.Module:
    cfg = compose_config(tmp_path, [f"model/energy={energy}", *COMMON, *overrides])
    data = SimpleNamespace(dim=DX, n_train=8, mean=torch.zeros(DX), std=torch.ones(DX))
    return build_model(cfg, data).energy


def confinement(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return 0.5 * GAMMA * ((x**2).sum(-1) + (z**2).sum(-1))


def layers(net: nn.Module, kind: type[nn.Module]) -> list[nn.Module]:
    return [m for m in net if isinstance(m, kind)]


def assert_mlp(net: nn.Sequential, n_in: int, n_out: int) -> None:
    """``DEPTH`` hidden layers of ``WIDTH`` units, ELU between the linear layers."""
    sizes = [(m.in_features, m.out_features) for m in layers(net, nn.Linear)]
    assert sizes == list(zip([n_in] + [WIDTH] * DEPTH, [WIDTH] * DEPTH + [n_out]))
    assert len(layers(net, nn.ELU)) == DEPTH == len(net) - DEPTH - 1


X, Z = torch.randn(7, DX, generator=torch.Generator().manual_seed(0)), torch.randn(7, DZ)


def test_mlp_energy(tmp_path):
    energy = built(tmp_path, "mlp", "model.energy.spectral_norm=true")
    assert_mlp(energy.net, DX + DZ, 1)
    for _ in range(30):  # converge the power iteration of the spectral norm
        energy(X, Z)
    energy.eval()
    for linear in layers(energy.net, nn.Linear):
        assert float(torch.linalg.matrix_norm(linear.weight.detach(), ord=2)) == pytest.approx(1.0, abs=1e-3)
    xz = torch.cat([X, Z], -1)
    torch.testing.assert_close(energy(X, Z), energy.net(xz).squeeze(-1) + confinement(X, Z))


@pytest.mark.parametrize("learn_sigma", [True, False])
def test_decoder_energy(tmp_path, learn_sigma):
    energy = built(tmp_path, "decoder", f"model.energy.sigma={SIGMA}", f"model.energy.learn_sigma={learn_sigma}")
    assert_mlp(energy.decoder, DZ, DX)
    assert_mlp(energy.prior, DZ, 1)
    assert ("log_sigma" in dict(energy.named_parameters())) == learn_sigma
    expected = (0.5 * (Z**2).sum(-1) + energy.prior(Z).squeeze(-1) + ((X - energy.decoder(Z)) ** 2).sum(-1)
                / (2 * SIGMA**2) + confinement(X, Z))
    torch.testing.assert_close(energy(X, Z), expected)


def test_conv_energy(tmp_path):
    energy = built(tmp_path, "conv")
    convs = layers(energy.net, nn.Conv2d)
    shapes = [(c.in_channels, c.out_channels, c.kernel_size, c.padding_mode) for c in convs]
    assert shapes == [(1 + DZ, WIDTH, (3, 3), "circular")] + [(WIDTH, WIDTH, (3, 3), "circular")] * (DEPTH - 1) + [
        (WIDTH, 1, (1, 1), "zeros")]
    assert len(layers(energy.net, nn.ELU)) == DEPTH
    side = int(DX**0.5)
    field = torch.cat([X.reshape(-1, 1, side, side), Z.reshape(-1, DZ, 1, 1).expand(-1, DZ, side, side)], 1)
    torch.testing.assert_close(energy(X, Z), energy.net(field).sum((-1, -2, -3)) + confinement(X, Z))


def test_amortised_encoder(tmp_path):
    """The encoder x -> (mu, log sigma): ``depth`` ELU layers of ``width`` units and a head; mu = m tanh(raw / m)
    and sigma <= s for m = max_mean, s = max_scale; Adam at the encoder's lr; the positive phase draws
    z = mu + sigma eps, K per datum, then T_z ULA steps of h_z."""
    k, h, steps, lr, max_scale, max_mean = 3, 0.02, 2, 2.0e-3, 0.6, 1.5
    posterior = [f"sampler.posterior.encoder.{key}={value}" for key, value in
                 {"width": WIDTH, "depth": DEPTH, "activation": "elu", "lr": lr, "max_scale": max_scale,
                  "max_mean": max_mean}.items()]
    cfg = compose_config(tmp_path, [
        "sampler=amortised", f"model.dz={DZ}", *posterior, f"sampler.posterior.n_particles={k}",
        f"sampler.posterior.step_size={h}", f"sampler.posterior.n_steps={steps}", "sampler.posterior.kernel=ula",
    ])
    model = build_model(cfg, SimpleNamespace(dim=DX, n_train=8, mean=torch.zeros(DX), std=torch.ones(DX)))
    encoder = model.posterior.encoder
    sizes = [(m.in_features, m.out_features) for m in layers(encoder, nn.Linear)]
    assert sizes == [(DX, WIDTH)] + [(WIDTH, WIDTH)] * (DEPTH - 1) + [(WIDTH, 2 * DZ)]  # the head: (mu, log sigma)
    assert len(layers(encoder, nn.ELU)) == DEPTH
    assert model.posterior.configure_optimizer().param_groups[0]["lr"] == lr
    with torch.no_grad():
        encoder[-1].bias.copy_(torch.tensor([-5.0, 0.4, 3.0, -2.0]))
    raw = encoder(X)
    mu, log_sigma = model.posterior(X)
    torch.testing.assert_close(mu, max_mean * torch.tanh(raw[:, :DZ] / max_mean))
    torch.testing.assert_close(log_sigma, raw[:, DZ:].clamp(max=torch.log(torch.tensor(max_scale))))
    z = model.posterior.particles(model.energy, X, None, torch.Generator().manual_seed(1))
    draws = torch.Generator().manual_seed(1)
    start = mu.detach().unsqueeze(1) + log_sigma.detach().exp().unsqueeze(1) * torch.randn((X.shape[0], k, DZ),
                                                                                          generator=draws)
    xk = X.unsqueeze(1).expand(-1, k, -1)
    torch.testing.assert_close(z, chain(lambda v: model.energy(xk, v), start, [h] * steps, "ula", None, draws))
