"""The step-function kernel against a frozen copy of the loop it replaced, and its compiled path against eager.

The README's quality figures are reproduced digit for digit, so the eager kernel must consume the generator
in the same order and do the same arithmetic as the loop before the refactor: compared to exact equality.
The compiled path sees the same noise, so it must give the same samples to float tolerance.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from lvebm_lightning.energies import MLPEnergy, on_pairs
from lvebm_lightning.energies.base import cached_weights
from lvebm_lightning.langevin import LangevinConfig, langevin
from lvebm_lightning.langevin import compiled as langevin_compiled


def _frozen_energy_and_grad(energy, y):
    with torch.enable_grad():
        y = y.detach().requires_grad_(True)
        u = energy(y)
        (grad,) = torch.autograd.grad(u.sum(), y)
    return u.detach(), grad


def _frozen_clip(grad, max_norm):
    norm = grad.norm(dim=-1, keepdim=True)
    return grad * (max_norm / norm.clamp_min(max_norm))


def _frozen_log_proposal(y_to, y_from, grad_from, h):
    return -((y_to - y_from + h * grad_from) ** 2).sum(-1) / (4.0 * h)


def _frozen_langevin(energy, y, config, generator):
    """The kernel's loop as it was before the step functions (commit 8684cda), copied by hand, frozen."""
    y = y.detach()
    accept_sum = torch.zeros((), device=y.device, dtype=y.dtype)
    if config.n_steps == 0:
        return y, accept_sum + 1.0
    u, grad = _frozen_energy_and_grad(energy, y) if config.metropolis else (None, None)
    for h in config.step_sizes():
        if not config.metropolis:
            _, grad = _frozen_energy_and_grad(energy, y)
        g = grad if config.grad_clip is None else _frozen_clip(grad, config.grad_clip)
        noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        proposal = y - h * g + (2.0 * h) ** 0.5 * noise
        if not config.metropolis:
            y = proposal.detach()
            continue
        u_new, grad_new = _frozen_energy_and_grad(energy, proposal)
        g_new = grad_new if config.grad_clip is None else _frozen_clip(grad_new, config.grad_clip)
        log_ratio = (u - u_new) + _frozen_log_proposal(y, proposal, g_new, h) - _frozen_log_proposal(proposal, y, g, h)
        uniform = torch.rand(log_ratio.shape, generator=generator, device=y.device, dtype=y.dtype)
        accept = torch.log(uniform) < log_ratio
        y = torch.where(accept.unsqueeze(-1), proposal, y).detach()
        u = torch.where(accept, u_new, u)
        grad = torch.where(accept.unsqueeze(-1), grad_new, grad)
        accept_sum = accept_sum + accept.to(y.dtype).mean()
    if not config.metropolis:
        return y, accept_sum + 1.0
    return y, accept_sum / config.n_steps


def _network(spectral_norm: bool = False) -> MLPEnergy:
    torch.manual_seed(0)
    return MLPEnergy(2, 1, width=32, depth=2, spectral_norm=spectral_norm, gamma=0.1)


@pytest.mark.parametrize("kernel", ["ula", "mala"])
@pytest.mark.parametrize("extras", [{}, {"grad_clip": 0.5, "final_step_size": 0.05}])
def test_eager_kernel_equals_the_frozen_loop_exactly(kernel, extras):
    net = _network()
    energy = on_pairs(net, 2)
    y0 = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
    config = LangevinConfig(0.8, 25, kernel=kernel, **extras)
    y, accept = langevin(energy, y0, config, torch.Generator().manual_seed(2))
    y_ref, accept_ref = _frozen_langevin(energy, y0, config, torch.Generator().manual_seed(2))
    assert torch.equal(y, y_ref)
    assert torch.equal(accept, accept_ref)
    if config.metropolis:
        assert 0.0 < float(accept) < 1.0  # the test exercises both branches of the acceptance


def test_the_kernel_name_decides_the_metropolis_flag():
    assert LangevinConfig(0.1, 1).kernel == "mala"
    assert LangevinConfig(0.1, 1, kernel="mala").metropolis
    assert not LangevinConfig(0.1, 1, kernel="ula").metropolis
    with pytest.raises(ValueError, match="kernel must be one of"):
        LangevinConfig(0.1, 1, kernel="hmc")


# T = 23. Cached spectral-norm weights: MALA evaluates its start eagerly (which computes the weights), then four
# compiled blocks of 5 steps and one of 3; ULA runs its first step eagerly, then four blocks of 5 and one of 2.
# Plain weights: MALA's start is a graph of its own, then blocks 5 and 3; ULA evaluates nothing at its start and
# runs every step in the blocks 5 and 3. The batch differs between the two, so each counts its own graphs.
GRAPHS = {  # (kernel, spectral norm): (batch, the block lengths compiled (0: the start), new graphs)
    ("ula", True): (32, {5, 2}, 2), ("mala", True): (32, {5, 3}, 2),
    ("ula", False): (24, {5, 3}, 2), ("mala", False): (24, {0, 5, 3}, 3),
}


@pytest.mark.parametrize(("kernel", "spectral_norm"), list(GRAPHS))
def test_compiled_chain_matches_eager_for_the_same_noise(kernel, spectral_norm):
    """Compiled and eager chains of a conditional energy (a closure over x, as the posterior uses it), with and
    without spectral norm (cached weights, as training and evaluation run it), agree to float tolerance; no graph
    compiles twice."""
    net = _network(spectral_norm=spectral_norm)
    batch, lengths, new_graphs = GRAPHS[kernel, spectral_norm]
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for seed in (3, 4):
        gen = torch.Generator().manual_seed(seed)
        x, z0 = torch.randn(batch, 4, 2, generator=gen), torch.randn(batch, 4, 1, generator=gen)
        config = LangevinConfig(0.05, 23, kernel=kernel, final_step_size=0.01)
        compiled = LangevinConfig(0.05, 23, kernel=kernel, final_step_size=0.01, compile=True)

        def energy(zz, x=x):
            return net(x, zz)

        with cached_weights(net), warnings.catch_warnings():
            warnings.filterwarnings("error", message="lvebm: torch.compile")  # a fallback to eager: fail
            z, acc = langevin(energy, z0, config, torch.Generator().manual_seed(seed))
            z_c, acc_c = langevin(energy, z0, compiled, torch.Generator().manual_seed(seed))
        assert not torch.equal(z, z0)
        torch.testing.assert_close(z_c, z, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(acc_c, acc, rtol=0, atol=1.5 / (batch * 4))  # at most one flipped decision
    assert (kernel, "default") not in langevin_compiled._FAILED
    # One graph per block length for both chains: neither the eager start's strided gradient (a slice of the
    # gradient of E([x, z])) nor the second chain's new x compiles a block again.
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs == new_graphs
    assert langevin_compiled.BLOCK == 5
    assert {(kernel, "default", n) for n in lengths} <= set(langevin_compiled._COMPILED)


def test_a_chain_is_cut_into_whole_blocks_and_one_shorter_block():
    assert langevin_compiled.block_lengths(50) == [5] * 10  # T_n: one graph per shape
    assert langevin_compiled.block_lengths(23) == [5, 5, 5, 5, 3]
    assert langevin_compiled.block_lengths(4) == [4]
    assert langevin_compiled.block_lengths(0) == []


def test_a_block_that_fails_to_compile_runs_its_noise_eagerly_with_one_warning():
    """ULA evaluates nothing at its start, so its first compiled block is where compilation fails: that block's drawn
    noise, and every later step, run eagerly, giving the eager chain bit for bit."""

    def untraceable(y):  # a host read of a tensor value: dynamo cannot keep it in one graph
        return 0.5 * (y**2).sum(-1) * float(y.abs().max() > -1.0)

    y0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(5))
    eager, _ = langevin(untraceable, y0, LangevinConfig(0.1, 12, kernel="ula"), torch.Generator().manual_seed(6))
    langevin_compiled._FAILED.discard(("ula", "default"))
    with pytest.warns(UserWarning, match="torch.compile of the ula Langevin step failed") as record:
        config = LangevinConfig(0.1, 12, compile=True, kernel="ula")
        compiled, _ = langevin(untraceable, y0, config, torch.Generator().manual_seed(6))
    langevin_compiled._FAILED.discard(("ula", "default"))
    assert len([w for w in record if "torch.compile" in str(w.message)]) == 1
    assert torch.equal(compiled, eager)


def test_a_compiled_chain_of_no_steps_returns_its_start():
    y0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    for kernel in ("ula", "mala"):
        y, accept = langevin_compiled.compiled_langevin(
            on_pairs(_network(), 2), y0, LangevinConfig(0.1, 0, kernel=kernel, compile=True)
        )
        assert torch.equal(y, y0) and float(accept) == 1.0


def test_compile_failure_falls_back_to_eager_with_one_warning():
    def untraceable(y):  # a host read of a tensor value: dynamo cannot keep it in one graph
        return 0.5 * (y**2).sum(-1) * float(y.abs().max() > -1.0)

    y0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(5))
    config = LangevinConfig(0.1, 6, kernel="mala")
    eager, _ = langevin(untraceable, y0, config, torch.Generator().manual_seed(6))
    langevin_compiled._FAILED.discard(("mala", "default"))
    with pytest.warns(UserWarning, match="torch.compile of the mala Langevin step failed") as record:
        compiled, _ = langevin(
            untraceable, y0, LangevinConfig(0.1, 6, kernel="mala", compile=True), torch.Generator().manual_seed(6)
        )
    langevin_compiled._FAILED.discard(("mala", "default"))
    assert len([w for w in record if "torch.compile" in str(w.message)]) == 1
    assert torch.equal(compiled, eager)


def test_compiled_path_stays_compiled_past_the_users_recompile_limit():
    """One process can meet many chain shapes (posterior and negative batches, validation, long chains, several
    models), more graphs than dynamo's recompile limit per code object (8 by default). Every one
    must still compile, not fall back to eager with a warning, and still match eager. The user's limit is set to
    2 here, so that 3 graphs (3 batch sizes of one 5-step block) cross it cheaply; the chain raises it while it runs
    and leaves the user's setting as it was."""
    net = _network()
    energy = on_pairs(net, 2)
    with warnings.catch_warnings(), torch._dynamo.config.patch(recompile_limit=2):
        warnings.filterwarnings("error", message="lvebm: torch.compile")  # a fallback to eager: fail
        for b in range(5, 8):  # ULA, T = 5: one 5-step block, one graph per batch size
            y0 = torch.randn(b, 3, generator=torch.Generator().manual_seed(b))
            eager, _ = langevin(energy, y0, LangevinConfig(0.05, 5, kernel="ula"), torch.Generator().manual_seed(b))
            compiled, _ = langevin(
                energy, y0, LangevinConfig(0.05, 5, compile=True, kernel="ula"), torch.Generator().manual_seed(b)
            )
            torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
        assert torch._dynamo.config.recompile_limit == 2
    assert ("ula", "default") not in langevin_compiled._FAILED
