"""The learning-rate schedule: linear warm-up, then cosine decay, composed from torch's own schedulers.

For base rate lr, W warm-up steps and T = ``total_steps`` (``trainer.max_steps``), step t gets

    lr_t = lr (t + 1) / W                                                        t < W   (LinearLR)
    lr_t = eta + (lr - eta) (1 + cos(pi (t - W) / (T - W))) / 2,   eta = min_lr_ratio lr,   t >= W
                                                                                 (CosineAnnealingLR)

joined at t = W by ``SequentialLR``. The config gives it as a Hydra ``_partial_`` (``model.lr_scheduler``) and
the module binds the optimizer. torch's cosine is a recursion, so its rates differ from the closed form above
in the last bits of a float64 (below 4e-13 relative over 4000 steps): the float32 steps Adam takes are the same.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0
) -> LRScheduler:
    """Linear warm-up over ``warmup_steps`` steps, then cosine decay to ``min_lr_ratio * lr`` at ``total_steps``."""
    if not isinstance(total_steps, int) or total_steps <= 0:
        raise ValueError(
            f"the cosine learning-rate schedule needs trainer.max_steps > 0, got {total_steps}; set trainer.max_steps "
            "or a constant schedule (model.lr_scheduler._target_=torch.optim.lr_scheduler.ConstantLR, factor=1.0)."
        )
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"lr_scheduler.warmup_steps must lie in [0, max_steps), got {warmup_steps}.")
    base_lr = optimizer.param_groups[0]["lr"]
    cosine = CosineAnnealingLR(optimizer, T_max=total_steps - warmup_steps, eta_min=min_lr_ratio * base_lr)
    if warmup_steps == 0:
        return cosine
    warmup = LinearLR(optimizer, start_factor=1.0 / warmup_steps, end_factor=1.0, total_iters=warmup_steps - 1)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])
