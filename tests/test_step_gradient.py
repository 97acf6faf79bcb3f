"""One real training step's parameter gradient against autograd of the stated loss, recomputed by the test.

docs/design.md section 1, step 3: after the particles have moved,

    L(theta) = mean_{i,k} E(x_i, z_i^k) - mean_j E(x~_j, z~_j) + alpha (mean E_pos^2 + mean E_neg^2).

The test records, around one step of a real Trainer, the batch x_i, the energy's parameters before the step, the
gradient the module backpropagated (``on_after_backward``: before clipping and before the optimizer step), and
what the step left behind: the batch's particles in the posterior store and the pool. The pool is as large as one
negative batch (M = B, one rank), so every pool row is drawn and moved and the moved negatives are the whole pool
after the step, whatever their order. The test then rebuilds L from those particles with its own formula on a copy
of the energy and compares its autograd gradient with the module's. A flipped loss sign, a dropped or mis-weighted
term, particles that are not written back (or written back wrong), or a pool that is not written back all change
one side and not the other.
"""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import pytest
import torch
from hydra.utils import instantiate

from lvebm_lightning.training.run import build_model, instantiate_callbacks

ALPHA, K, B = 0.1, 2, 64


class RecordStep(pl.Callback):
    """Everything the test needs to recompute the first step's loss and gradient; stops after that step."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.x, self.index = batch[0].clone(), batch[1].clone()
        self.energy = copy.deepcopy(pl_module.energy)

    def on_before_backward(self, trainer, pl_module, loss):
        self.loss = loss.detach().clone()

    def on_after_backward(self, trainer, pl_module):
        self.grads = [p.grad.detach().clone() for p in pl_module.energy.parameters()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.z = pl_module.posterior.store.get(self.index).clone()
        self.pool = pl_module.negative_pool.full().clone()
        trainer.should_stop = True


@pytest.fixture(scope="module")
def step(tmp_path_factory):
    from tests.conftest import compose_config

    cfg = compose_config(tmp_path_factory.mktemp("step"), [
        "trainer.max_steps=1", "logger=csv", "~callbacks.gallery", "~callbacks.metrics", "~callbacks.best_checkpoint",
        f"model.alpha={ALPHA}", f"sampler.posterior.n_particles={K}", f"data.batch_size={B}",
        f"sampler.negative.pool_size={B}", "sampler.negative.reinit_prob=0.5", "model.energy.width=32",
        "+trainer.enable_progress_bar=false",
    ])
    datamodule = instantiate(cfg.data).prepare()
    pl.seed_everything(int(cfg.seed), verbose=False)
    model = build_model(cfg, datamodule)
    record = RecordStep()
    trainer = instantiate(cfg.trainer, callbacks=[*instantiate_callbacks(cfg.callbacks), record], logger=False)
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 1
    return model, record


def _loss(record: RecordStep, dx: int, sign: float = 1.0, alpha: float = ALPHA, k: int = K) -> torch.Tensor:
    """The stated loss at the recorded particles (``sign`` -1: ascent; ``k`` < K: only the first k particles)."""
    e_pos = record.energy(record.x.unsqueeze(1).expand(-1, k, -1), record.z[:, :k])
    e_neg = record.energy(record.pool[:, :dx], record.pool[:, dx:])
    assert e_pos.shape == (B, k) and e_neg.shape == (B,)
    return sign * (e_pos.mean() - e_neg.mean()) + alpha * ((e_pos**2).mean() + (e_neg**2).mean())


def _grad(loss: torch.Tensor, record: RecordStep) -> torch.Tensor:
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(record.energy.parameters()))])


def test_the_step_gradient_is_autograd_of_the_stated_loss_at_the_moved_particles(step):
    model, record = step
    loss = _loss(record, model.dx)
    torch.testing.assert_close(record.loss, loss.detach(), rtol=1e-5, atol=1e-6)
    got = torch.cat([g.flatten() for g in record.grads])
    torch.testing.assert_close(got, _grad(loss, record), rtol=1e-4, atol=1e-6)


def test_the_comparison_rejects_near_misses_of_the_loss(step):
    """The module's gradient is farther than float error from the loss with a flipped contrastive sign, without the
    regulariser, or with one particle of the K: the tolerance above is far below what separates them."""
    model, record = step
    got = torch.cat([g.flatten() for g in record.grads])
    for name, kwargs in {"sign": {"sign": -1.0}, "no regulariser": {"alpha": 0.0}, "one particle": {"k": 1}}.items():
        assert float((_grad(_loss(record, model.dx, **kwargs), record) - got).norm()) > 1e-3 * float(got.norm()), name
