"""The posterior strategies (persistent, short-run, amortised) against a posterior known in closed form.

With the linear-Gaussian model's own joint energy held FIXED (no energy training),

    E(x, z) = |z|^2 / 2 + |x - W z - mu|^2 / (2 sigma^2),     p(z | x) = N(m(x), S),
    S = (I + W^T W / sigma^2)^{-1} = Lambda^{-1},            m(x) = S W^T (x - mu) / sigma^2,

every strategy's particles can be checked against the exact posterior. Unadjusted Langevin with step h on this
Gaussian target is a linear recursion z <- z - h Lambda (z - m) + sqrt(2h) xi, so its law is known exactly too:
after T steps from N(0, I) (dz = 1, a = 1 - h Lambda)

    mean_T = (1 - a^T) m,     var_T = a^{2T} + v_h (1 - a^{2T}),     v_h = 1 / (Lambda (1 - h Lambda / 2)),

whose T -> infinity limit N(m, v_h) is the O(h)-biased stationary law (v_h / S = 1 + h Lambda / 2 + O(h^2)). The
Langevin checks compare with these laws, so their tolerances come from the sample size alone.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from lvebm_lightning.config.validation import ConfigError, validate
from lvebm_lightning.data.systems import LinearGaussian
from lvebm_lightning.energies import MLPEnergy
from lvebm_lightning.langevin import LangevinConfig
from lvebm_lightning.particles import AmortisedPosterior, PersistentPosterior, ShortRunPosterior, build_posterior
from lvebm_lightning.training.run import train
from tests.helpers.encoder_probe import RECORDS, OptimizerRecorder

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = LinearGaussian()
W = torch.tensor(SYSTEM.w, dtype=torch.float32)  # [dx, dz] = [2, 1]
MU = torch.tensor(SYSTEM.mu, dtype=torch.float32)
SIGMA2 = SYSTEM.sigma**2
PRECISION = float(1.0 + (W.T @ W).squeeze() / SIGMA2)  # Lambda (dz = 1)
S = 1.0 / PRECISION  # exact posterior variance, 0.027
H = 0.005  # h Lambda = 0.19: a visible O(h) bias, which the checks account for exactly
Z_SCORE = 4.5  # two-sided normal quantile: a correct sampler fails a moment check with probability < 1e-5


class LinearGaussianJoint(nn.Module):
    """The linear-Gaussian model's -log p(x, z) up to a constant (fixed: it has no parameters)."""

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        r = x - z @ W.T - MU
        return 0.5 * (z * z).sum(-1) + 0.5 * (r * r).sum(-1) / SIGMA2


def posterior_mean(x: Tensor) -> Tensor:
    """m(x) ``[B, 1]``."""
    return S * ((x - MU) @ W) / SIGMA2


def ula_law(n_steps: float) -> tuple[float, float]:
    """(c_T, var_T): after T ULA steps from N(0, 1) the particles are N(c_T m(x), var_T); T = inf: stationary."""
    a = 1.0 - H * PRECISION
    v_h = 1.0 / (PRECISION * (1.0 - H * PRECISION / 2.0))
    decay = 0.0 if math.isinf(n_steps) else a ** (2 * n_steps)
    return 1.0 - (0.0 if math.isinf(n_steps) else a**n_steps), decay + v_h * (1.0 - decay)


def assert_gaussian_moments(z: Tensor, x: Tensor, scale: float, var: float) -> None:
    """Particles z ``[B, K, 1]`` of data x ``[B, 2]`` have mean ``scale`` m(x_i) and variance ``var``.

    The standardised residuals r = (z - scale m(x)) / sqrt(var) of n = B K independent chains are N(0, 1) if the
    claim holds: their mean has standard error 1 / sqrt(n), their variance sqrt(2 / (n - 1)).
    """
    r = ((z - scale * posterior_mean(x).unsqueeze(1)) / math.sqrt(var)).flatten()
    n = r.numel()
    assert abs(float(r.mean())) < Z_SCORE / math.sqrt(n), float(r.mean())
    assert abs(float(r.var()) - 1.0) < Z_SCORE * math.sqrt(2.0 / (n - 1)), float(r.var())


@pytest.fixture(scope="module")
def data() -> Tensor:
    return torch.from_numpy(SYSTEM.sample(1000, seed=0))


def test_persistent_particles_reach_the_exact_posterior_by_persisting(data):
    """T_z = 2 steps a call is far from converged, but 50 calls continue the same chains: 100 steps in all."""
    k, calls = 8, 50
    posterior = PersistentPosterior(k, LangevinConfig(step_size=H, n_steps=2, kernel="ula"))
    generator = torch.Generator().manual_seed(0)
    posterior.setup(len(data), 1, 0, 1, torch.device("cpu"), generator)
    index = torch.arange(len(data))
    energy = LinearGaussianJoint()
    for _ in range(calls):
        z = posterior.particles(energy, data, index, generator)
    assert torch.equal(posterior.store.get(index), z)
    assert_gaussian_moments(z, data, *ula_law(math.inf))
    assert_gaussian_moments(z, data, *ula_law(2 * calls))  # the same law: the chains have mixed
    # The stationary law is ULA's, O(h) off the exact posterior N(m, S): that bias is what the check allows for.
    assert ula_law(math.inf)[1] / S == pytest.approx(1.0 + H * PRECISION / 2.0, rel=0.05)


def test_short_run_chains_follow_the_finite_time_law_and_match_only_when_long(data):
    energy = LinearGaussianJoint()
    for n_steps in (3, 100):
        posterior = ShortRunPosterior(8, LangevinConfig(step_size=H, n_steps=n_steps, kernel="ula"))
        posterior.setup(len(data), 1, 0, 1, torch.device("cpu"), torch.Generator())
        z = posterior.particles(energy, data, torch.arange(len(data)), torch.Generator().manual_seed(n_steps))
        assert_gaussian_moments(z, data, *ula_law(n_steps))
        if n_steps == 100:
            assert_gaussian_moments(z, data, *ula_law(math.inf))
        else:  # three steps from N(0, 1) are still far from the posterior: the check has power
            with pytest.raises(AssertionError):
                assert_gaussian_moments(z, data, *ula_law(math.inf))


def train_encoder(x_train: Tensor, n_steps: int, seed: int = 0) -> AmortisedPosterior:
    """The encoder alone, on the fixed joint energy: Adam at 1e-2, cosine-decayed to 0 over ``n_steps``."""
    torch.manual_seed(seed)
    posterior = AmortisedPosterior(2, 1, 8, LangevinConfig(step_size=H, n_steps=0), width=32, depth=2, lr=1e-2)
    optimizer = posterior.configure_optimizer()
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, n_steps)
    generator = torch.Generator().manual_seed(seed)
    energy = LinearGaussianJoint()
    for _ in range(n_steps):
        x = x_train[torch.randint(len(x_train), (256,), generator=generator)]
        optimizer.zero_grad()
        posterior.loss(energy, x, generator).backward()
        optimizer.step()
        schedule.step()
    return posterior


def test_amortised_encoder_learns_the_exact_posterior():
    """q_phi = N(mu_phi(x), sigma_phi(x)^2) can be exact here (m is linear in x, S constant), so maximising the
    ELBO should drive KL(q_phi || p(z | x)) to zero; what is left after 600 steps is optimisation error.

    Tolerances: the gradient is estimated from B K = 2048 reparameterised samples a step, and the constant-rate
    part of Adam (lr 1e-2) leaves parameter noise that the cosine decay averages out. Over seeds 0-5 this
    reached mean KL 4e-4 .. 1.1e-3 nats, RMS mean error 0.02 .. 0.04 posterior standard deviations and a mean
    variance ratio within 0.4% of 1; the bounds below are about 5x those (held-out x: 4096 points, whose sampling
    error in these averages is far smaller). The untrained encoder (q = N(0, 1)) has mean KL ~ 34 nats.
    """
    posterior = train_encoder(torch.from_numpy(SYSTEM.sample(8192, seed=1)), n_steps=600)
    x = torch.from_numpy(SYSTEM.sample(4096, seed=2))
    with torch.no_grad():
        mu, log_sigma = posterior(x)
    m, s = posterior_mean(x), math.sqrt(S)
    sigma = log_sigma.exp()
    kl = torch.log(s / sigma) + (sigma**2 + (mu - m) ** 2) / (2 * S) - 0.5
    assert float(kl.mean()) < 5e-3
    assert float(((mu - m) / s).pow(2).mean().sqrt()) < 0.15
    assert float((sigma**2 / S).mean()) == pytest.approx(1.0, abs=0.02)
    # Its samples (T_z = 0) are q_phi's: the exact posterior's moments, within the same tolerance.
    z = posterior.particles(LinearGaussianJoint(), x, None, torch.Generator().manual_seed(3))
    r = ((z - m.unsqueeze(1)) / s).flatten()
    assert abs(float(r.mean())) < 0.05 and float(r.var()) == pytest.approx(1.0, abs=0.05)
    # The ELBO of q_phi is log p(x) + log Z - KL: with the exact log p(x) of this model, within the KL tolerance.
    # Its Monte-Carlo error: Var_q E = 1/2 at the optimum, so S = 256 draws on 4096 data give a standard error 7e-4.
    log_p_plus_log_z = -SYSTEM.energy(x.double()) - SYSTEM.log_partition() + _log_z_joint()
    elbo = posterior.elbo(LinearGaussianJoint(), x, 256, torch.Generator().manual_seed(4))
    assert float((log_p_plus_log_z - elbo).mean()) == pytest.approx(float(kl.mean()), abs=Z_SCORE * 7e-4)


def _log_z_joint() -> float:
    """log of the integral of exp(-E(x, z)) over (x, z): (dx + dz) / 2 log 2 pi + dx log sigma (E has no constant)."""
    return 0.5 * 3 * math.log(2 * math.pi) + 2 * 0.5 * math.log(SIGMA2)


def test_encoder_loss_reaches_phi_only_and_is_the_negative_elbo():
    energy = MLPEnergy(2, 1, width=16, depth=1)
    posterior = build_posterior(
        "amortised", dx=2, dz=1, n_particles=4, langevin=LangevinConfig(step_size=0.01, n_steps=0),
        encoder={"width": 16, "depth": 1},
    )
    x = torch.randn(32, 2)
    loss = posterior.loss(energy, x, torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is None for p in energy.parameters())  # theta is held fixed in the encoder's objective
    assert all(p.grad is not None for p in posterior.parameters())
    assert bool(posterior.encoder[-1].weight.grad.abs().sum() > 0)  # (the zero head passes none further at first)
    # Its value is -mean ELBO_phi (+ log Z): the same samples give mean E - mean H.
    elbo = posterior.elbo(energy, x, 4, torch.Generator().manual_seed(0))
    assert float(loss.detach()) == pytest.approx(-float(elbo.mean()), rel=1e-5)
    # The encoder starts as the other strategies' init distribution, N(0, init_scale^2).
    with torch.no_grad():
        mu, log_sigma = posterior(x)
    assert torch.equal(mu, torch.zeros_like(mu)) and torch.equal(log_sigma, torch.zeros_like(log_sigma))


def test_amortised_needs_latents():
    with pytest.raises(ValueError, match="model.dz >= 1"):
        build_posterior("amortised", dx=2, dz=0, n_particles=1, langevin=LangevinConfig(step_size=0.01, n_steps=0))


def test_config_checks_of_the_amortised_sampler(make_cfg):
    validate(make_cfg("sampler=amortised", "sampler.posterior.n_steps=0"))  # the encoder's samples as they are
    with pytest.raises(ConfigError, match="sampler.posterior.n_steps"):
        validate(make_cfg("sampler.posterior.n_steps=0"))  # persistent particles that never move: refused
    with pytest.raises(ConfigError, match="model.dz >= 1"):
        validate(make_cfg("sampler=amortised", "model.dz=0"))
    with pytest.raises(ConfigError, match="sampler.posterior.encoder.lr"):
        validate(make_cfg("sampler=amortised", "sampler.posterior.encoder.lr=0"))
    with pytest.raises(ConfigError, match="sampler.posterior.encoder.max_scale"):
        validate(make_cfg("sampler=amortised", "sampler.posterior.encoder.max_scale=0"))
    with pytest.raises(ConfigError, match="sampler.posterior.encoder.max_mean"):
        validate(make_cfg("sampler=amortised", "sampler.posterior.encoder.max_mean=-1"))
    validate(make_cfg("sampler=amortised", "sampler.posterior.encoder.max_mean=null"))  # mu unbounded


def test_the_encoder_bounds_hold_whatever_its_network_outputs():
    """sigma_j <= max_scale and |mu_j| < max_mean for any raw output, and inside the bounds the map raw -> mu is a
    bijection (tanh), so q_phi loses nothing there; max_mean=None leaves mu as the network gives it."""
    config = LangevinConfig(step_size=H, n_steps=0)
    posterior = AmortisedPosterior(2, 3, 4, config, width=8, depth=1, max_scale=0.5, max_mean=2.0)
    unbounded = AmortisedPosterior(2, 3, 4, config, width=8, depth=1, max_scale=0.5, max_mean=None)
    head = posterior.encoder[-1]
    with torch.no_grad():
        head.bias.copy_(torch.tensor([-50.0, 0.3, 50.0, 10.0, -1.0, 10.0]))
        unbounded.encoder.load_state_dict(posterior.encoder.state_dict())
        mu, log_sigma = posterior(torch.zeros(5, 2))
        raw_mu, _ = unbounded(torch.zeros(5, 2))
    assert float(mu.abs().max()) <= 2.0 and float(mu[0, 0]) < -1.99 and float(mu[0, 2]) > 1.99
    assert float(mu[0, 1]) == pytest.approx(2.0 * math.tanh(0.3 / 2.0), abs=1e-6)
    assert float(raw_mu[0, 0]) == pytest.approx(-50.0, abs=1e-4)
    assert float(log_sigma.exp().max()) <= 0.5 + 1e-6 and float(log_sigma[0, 1]) == pytest.approx(-1.0, abs=1e-6)


def train_recorded(cfg: Any) -> tuple[dict[str, float], OptimizerRecorder]:
    """``train(cfg)`` with an ``OptimizerRecorder`` in its callbacks; the metrics and that recorder."""
    RECORDS.clear()
    metrics = train(cfg)
    (recorder,) = RECORDS
    return metrics, recorder


def test_amortised_training_steps_both_optimizers_and_resumes_the_encoder(make_cfg):
    fast = ("sampler=amortised", "logger=csv", "~callbacks.gallery", "test=false",
            "callbacks.model_checkpoint.save_top_k=-1",
            "+callbacks.recorder._target_=tests.helpers.encoder_probe.OptimizerRecorder")
    cfg = make_cfg(*fast, run="a")
    metrics, recorder = train_recorded(cfg)
    run = Path(cfg.paths.output_dir)
    assert math.isfinite(metrics["val/elbo_encoder"]) and metrics["val/elbo_encoder"] < metrics["val/train_log_lik"]
    assert "val/log_z_ais" not in metrics  # dx + dz = 3: log Z by quadrature, as for the other strategies
    # Two optimizers, the second over the encoder's parameters exactly.
    energy_opt, encoder_opt = recorder.optimizers
    assert {id(p) for g in encoder_opt.param_groups for p in g["params"]} == recorder.encoder_params
    # One step of each per batch: global_step counts batches, and both Adam states saw every batch.
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == cfg.trainer.max_steps == 20
    assert len(last["optimizer_states"]) == 2
    for state in last["optimizer_states"]:
        assert {int(s["step"]) for s in state["state"].values()} == {20}
    head = last["state_dict"]["posterior.encoder.4.weight"]
    assert not torch.equal(head, torch.zeros_like(head))  # the zero-initialised head has moved
    # Resume from step 10: the encoder and its optimizer come back, and training continues exactly.
    mid = run / "checkpoints" / "step_000010.ckpt"
    resumed_cfg = make_cfg(*fast, f"ckpt_path={mid}", run="b")
    _, resumed = train_recorded(resumed_cfg)
    saved = torch.load(mid, map_location="cpu", weights_only=True)
    assert resumed.start_step == 10
    for key, value in resumed.start.items():
        assert torch.equal(value, saved["state_dict"][f"posterior.{key}"]), key
    assert {int(s["step"]) for s in resumed.optimizers[1].state_dict()["state"].values()} == {20}
    resumed_last = torch.load(Path(resumed_cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    for key, value in last["state_dict"].items():
        assert torch.equal(resumed_last["state_dict"][key], value), key
    for a, b in zip(last["optimizer_states"], resumed_last["optimizer_states"], strict=True):
        for pa, pb in zip(a["state"].values(), b["state"].values(), strict=True):
            assert torch.equal(pa["exp_avg"], pb["exp_avg"]) and torch.equal(pa["exp_avg_sq"], pb["exp_avg_sq"])


@pytest.mark.slow
def test_amortised_under_ddp_one_backward_averages_both_gradients(tmp_path):
    """2 CPU processes on gloo: DDP (no find_unused_parameters) accepts the one backward of energy + encoder loss,
    and both networks stay identical on the two ranks (averaged gradients) while they train."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    probe = tmp_path / "probe"
    proc = subprocess.run(
        [sys.executable, "train.py", "debug=fast", "test=false", "trainer=ddp_cpu", "trainer.devices=2",
         "sampler=amortised", "data.n_train=128", "data.batch_size=16", "sampler.negative.pool_size=64",
         "trainer.max_steps=4", "logger=csv", "+trainer.limit_val_batches=0", "~callbacks.best_checkpoint",
         "~callbacks.gallery", f"hydra.run.dir={tmp_path / 'run'}",
         "+callbacks.probe._target_=tests.helpers.encoder_probe.EncoderProbe", f"+callbacks.probe.out_dir={probe}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (torch.load(probe / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["global_step"] == r1["global_step"] == 4
    for key in ("energy_start", "encoder_start", "energy_end", "encoder_end"):
        assert torch.equal(r0[key], r1[key]), key
    assert not torch.equal(r0["encoder_start"], r0["encoder_end"])
    assert not torch.equal(r0["energy_start"], r0["energy_end"])
