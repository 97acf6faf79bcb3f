"""Every setting the training maths reads, replayed from its formula with the value written here.

One real run of ``train(cfg)`` (5 optimizer steps on one rank) gives every setting of docs/design.md section 1 a
value of its own, unlike its default and unlike every other setting's (so a setting read in place of another shows
too): K, h_z, T_z, the posterior's kernel, clip and init scale; M, the negative batch, rho, h_n, T_n, its annealed
final step, kernel, clip and init scale; alpha, the parameter-gradient clip, lr, Adam's betas and the schedule's
warm-up and floor; the energy's width, depth, activation and confinement gamma; the long chains' T_eval, h_eval and
kernel. A callback records, at the start and end of each step, what the step read and what it left: the batch, the
energy's weights, Adam's moments, the particles, the pool with its draw order, and the states of both generators.

The test then recomputes each step from those records with its own code and the constants of this file (never
read back from the config): the initial store and pool, T_z conditional steps (ULA here, clipped per particle),
the pool draw (rho of the batch re-initialised) and T_n joint MALA steps with geometric annealing, the loss
L = mean E_pos - mean E_neg + alpha (mean E_pos^2 + mean E_neg^2), the clipped gradient, the scheduled rate and
Adam's update; and fresh long chains at the end. ``test_each_setting_is_seen_by_the_replay`` shows the
comparison's power: the replay with any one setting at another value misses the run by far more than the
tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from lvebm_lightning.seeding import STREAM_DRAWS, STREAM_LATENT, STREAM_POOL, make_generator
from lvebm_lightning.training.run import train
from tests.conftest import compose_config
from tests.helpers.recorder import N_EVAL, Recorder
from tests.helpers.replay import chain

SETTINGS: dict[str, Any] = {
    "width": 12, "depth": 3, "activation": "tanh", "gamma": 0.3,
    "K": 2, "h_z": 0.013, "T_z": 3, "kernel_z": "ula", "clip_z": 0.15, "init_z": 0.7,
    "M": 96, "B_n": 24, "rho": 0.3, "h_n": 0.021, "T_n": 4, "final_h_n": 0.006, "kernel_n": "mala", "clip_n": 0.2,
    "init_n": 1.3,
    "alpha": 0.05, "gradient_clip": 0.05, "lr": 3.0e-3, "betas": (0.5, 0.9), "warmup": 2, "min_lr_ratio": 0.2,
    "T_eval": 6, "h_eval": 0.017, "kernel_eval": "ula",
}
"""The run's settings; the replay reads these, never the config."""
S = SETTINGS
STEPS, B, SEED, N_DATA = 5, 16, 3, 512
OVERRIDES = [
    "logger=csv", "~callbacks.gallery", "~callbacks.metrics", "~callbacks.best_checkpoint", "test=false",
    "+trainer.limit_val_batches=0", "+trainer.enable_progress_bar=false", f"trainer.max_steps={STEPS}",
    f"seed={SEED}", f"data.n_train={N_DATA}", f"data.batch_size={B}",
    "+callbacks.recorder._target_=tests.helpers.recorder.Recorder",
    f"model.energy.width={S['width']}", f"model.energy.depth={S['depth']}",
    f"model.energy.activation={S['activation']}", f"model.energy.gamma={S['gamma']}",
    f"sampler.posterior.n_particles={S['K']}", f"sampler.posterior.step_size={S['h_z']}",
    f"sampler.posterior.n_steps={S['T_z']}", f"sampler.posterior.kernel={S['kernel_z']}",
    f"sampler.posterior.grad_clip={S['clip_z']}", f"sampler.posterior.init_scale={S['init_z']}",
    f"sampler.negative.pool_size={S['M']}", f"sampler.negative.batch_size={S['B_n']}",
    f"sampler.negative.reinit_prob={S['rho']}", f"sampler.negative.step_size={S['h_n']}",
    f"sampler.negative.n_steps={S['T_n']}", f"+sampler.negative.final_step_size={S['final_h_n']}",
    f"sampler.negative.kernel={S['kernel_n']}", f"sampler.negative.grad_clip={S['clip_n']}",
    f"sampler.negative.init_scale={S['init_n']}",
    f"model.alpha={S['alpha']}", f"model.gradient_clip={S['gradient_clip']}", f"model.lr={S['lr']}",
    f"model.optimizer.betas=[{S['betas'][0]},{S['betas'][1]}]", f"model.lr_scheduler.warmup_steps={S['warmup']}",
    f"model.lr_scheduler.min_lr_ratio={S['min_lr_ratio']}",
    f"sampler.long_chains.n_steps={S['T_eval']}", f"sampler.long_chains.step_size={S['h_eval']}",
    f"sampler.long_chains.kernel={S['kernel_eval']}",
]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Recorder:
    cfg = compose_config(tmp_path_factory.mktemp("settings") / "run", OVERRIDES)
    with torch.random.fork_rng():
        train(cfg)
    assert len(Recorder.steps) == STEPS and Recorder.end["step"] == STEPS
    return Recorder


# -- the replay: the formulas of docs/design.md section 1, written out here ------------------------------------------
ACTIVATIONS = {"tanh": nn.Tanh, "silu": nn.SiLU}


def energy(weights: dict[str, Tensor], s: dict[str, Any]) -> Callable[[Tensor, Tensor], Tensor]:
    """E(x, z) = f([x, z]) + (gamma / 2)|[x, z]|^2, f an MLP of ``depth`` hidden layers of ``width`` units."""
    sizes = [weights["0.weight"].shape[1]] + [s["width"]] * s["depth"] + [1]
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers += [nn.Linear(sizes[i], sizes[i + 1])] + ([ACTIVATIONS[s["activation"]]()] if i < len(sizes) - 2 else [])
    net = nn.Sequential(*layers)
    net.load_state_dict(weights)  # strict: width and depth must be those of the run

    def e(x: Tensor, z: Tensor) -> Tensor:
        xz = torch.cat([x, z], dim=-1)
        return net(xz).squeeze(-1) + 0.5 * s["gamma"] * (xz * xz).sum(-1)

    e.net = net  # type: ignore[attr-defined]
    return e


def annealed(h: float, final: float | None, n: int) -> list[float]:
    """h_t = h (final / h)^(t / (T - 1)): geometric from h to the final step size."""
    return [h * (final / h) ** (t / (n - 1)) if final else h for t in range(n)]


def scheduled_lr(t: int, s: dict[str, Any]) -> float:
    """lr (t + 1) / W during warm-up, then cosine from lr to min_lr_ratio lr at t = T (T = the run's max_steps)."""
    lr, w = s["lr"], s["warmup"]
    if t < w:
        return lr * (t + 1) / w
    floor = s["min_lr_ratio"] * lr
    return floor + (lr - floor) * (1 + math.cos(math.pi * (t - w) / (STEPS - w))) / 2


def replay(step: dict[str, Any], t: int, s: dict[str, Any]) -> dict[str, Any]:
    """Step t recomputed from what it read: the batch's particles, the pool, the clipped gradient, the weights."""
    e = energy(step["weights"], s)
    x, dx = step["x"], step["x"].shape[1]
    xk = x.unsqueeze(1).expand(-1, s["K"], -1)
    latent = torch.Generator().set_state(step["latent_state"])
    z = chain(lambda v: e(xk, v), step["z"], [s["h_z"]] * s["T_z"], s["kernel_z"], s["clip_z"], latent)

    draws = torch.Generator().set_state(step["pool_state"])
    order, cursor, pool = step["order"], step["cursor"], step["pool"].clone()
    if cursor + s["B_n"] > order.shape[0]:
        order, cursor = torch.randperm(pool.shape[0], generator=draws), 0
    rows = order[cursor: cursor + s["B_n"]]
    fresh = s["init_n"] * torch.randn((s["B_n"], pool.shape[1]), generator=draws)
    reinit = torch.rand(s["B_n"], 1, generator=draws) < s["rho"]
    start = torch.where(reinit, fresh, pool[rows])
    moved = chain(lambda v: e(v[:, :dx], v[:, dx:]), start, annealed(s["h_n"], s["final_h_n"], s["T_n"]),
                  s["kernel_n"], s["clip_n"], draws)
    pool[rows] = moved

    e_pos, e_neg = e(xk, z), e(moved[:, :dx], moved[:, dx:])
    loss = e_pos.mean() - e_neg.mean() + s["alpha"] * ((e_pos**2).mean() + (e_neg**2).mean())
    params = list(e.net.parameters())
    grads = torch.autograd.grad(loss, params)
    norm = torch.cat([g.flatten() for g in grads]).norm()
    clipped = [g * min(1.0, s["gradient_clip"] / (float(norm) + 1e-6)) for g in grads]

    lr, (beta1, beta2), weights = scheduled_lr(t, s), s["betas"], {}
    for (name, p), g, m in zip(e.net.named_parameters(), clipped, step["moments"], strict=True):
        n = int(m["step"]) + 1 if m else 1
        avg = beta1 * m.get("exp_avg", torch.zeros_like(g)) + (1 - beta1) * g
        avg_sq = beta2 * m.get("exp_avg_sq", torch.zeros_like(g)) + (1 - beta2) * g * g
        update = (avg / (1 - beta1**n)) / ((avg_sq / (1 - beta2**n)).sqrt() + 1e-8)
        weights[name] = p.detach() - lr * update
    return {"z_after": z, "pool_after": pool, "clipped": clipped, "weights_after": weights, "lr": lr,
            "reinitialised": int(reinit.sum()), "norm": float(norm)}


def replay_start(s: dict[str, Any]) -> dict[str, Tensor]:
    """The store N(0, init_z^2) [N, K, dz] and the pool N(0, init_n^2) [M, dx + dz], from the (seed, rank, stream)
    generators."""
    store = s["init_z"] * torch.randn((N_DATA, s["K"], 1), generator=make_generator("cpu", SEED, 0, STREAM_LATENT))
    pool = s["init_n"] * torch.randn((s["M"], 3), generator=make_generator("cpu", SEED, 0, STREAM_POOL))
    return {"store": store, "pool": pool}


def replay_long_chains(end: dict[str, Any], s: dict[str, Any]) -> Tensor:
    """Fresh chains from N(0, I), T_eval steps of h_eval of the evaluation kernel, on the draws stream."""
    e = energy(end["weights"], s)
    draws = make_generator("cpu", SEED, 0, STREAM_DRAWS, end["step"])
    start = torch.randn(N_EVAL, 3, generator=draws)
    return chain(lambda v: e(v[:, :2], v[:, 2:]), start, [s["h_eval"]] * s["T_eval"], s["kernel_eval"], None, draws)


# -- the comparisons ---------------------------------------------------------------------------------------------
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


def mismatches(recorded: Recorder, s: dict[str, Any]) -> list[str]:
    """What the replay with settings ``s`` gets wrong about the recorded run (an empty list: nothing)."""
    wrong = []

    def compare(name: str, got: Any, want: Any) -> None:
        got, want = (got, want) if isinstance(got, list) else ([got], [want])
        if len(got) != len(want) or any(a.shape != b.shape or not torch.allclose(a, b, **TOLERANCE)
                                        for a, b in zip(got, want)):
            wrong.append(name)

    try:
        start = replay_start(s)
        compare("initial store", recorded.start["store"], start["store"])
        compare("initial pool", recorded.start["pool"], start["pool"])
        for t, step in enumerate(recorded.steps):
            assert step["x"].shape[0] == B
            got = replay(step, t, s)
            if abs(step["lr"] - got["lr"]) > 1e-12:
                wrong.append(f"step {t} lr")
            for key in ("z_after", "pool_after", "clipped"):
                compare(f"step {t} {key}", step[key], got[key])
            compare(f"step {t} weights", [step["weights_after"][k] for k in got["weights_after"]],
                    list(got["weights_after"].values()))
        compare("long chains", recorded.end["samples"], replay_long_chains(recorded.end, s))
    except (RuntimeError, ValueError) as err:  # a replay that cannot even run (e.g. weights of another shape)
        wrong.append(f"replay failed: {type(err).__name__}")
    return wrong


def test_every_step_of_a_run_is_its_formula_with_the_configured_values(recorded):
    assert mismatches(recorded, SETTINGS) == []
    # Each option was in play: the pool re-initialised some rows but not all, and the parameter clip bound.
    replays = [replay(step, t, SETTINGS) for t, step in enumerate(recorded.steps)]
    assert 0 < sum(r["reinitialised"] for r in replays) < STEPS * S["B_n"]
    assert all(r["norm"] > S["gradient_clip"] for r in replays)


OTHER_VALUES = {
    "width": 13, "depth": 2, "activation": "silu", "gamma": 0.1, "K": 1, "h_z": 0.01, "T_z": 2, "kernel_z": "mala",
    "clip_z": None, "init_z": 1.0, "M": 97, "B_n": 16, "rho": 0.01, "h_n": 0.01, "T_n": 3, "final_h_n": None,
    "kernel_n": "ula", "clip_n": None, "init_n": 1.0, "alpha": 0.01, "gradient_clip": 1.0, "lr": 1.0e-3,
    "betas": (0.0, 0.999), "warmup": 0, "min_lr_ratio": 0.0, "T_eval": 5, "h_eval": 0.021, "kernel_eval": "mala",
}
"""For each setting another value (mostly its default, or the other particle system's value)."""


@pytest.mark.parametrize("name", sorted(OTHER_VALUES))
def test_each_setting_is_seen_by_the_replay(recorded, name):
    assert set(OTHER_VALUES) == set(SETTINGS)
    assert mismatches(recorded, {**SETTINGS, name: OTHER_VALUES[name]}) != [], name
