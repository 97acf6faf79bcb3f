"""Use a trained checkpoint: model samples, posterior particles for new data, reconstructions and metrics.

For notebooks (the console commands ``lvebm-sample``, ``lvebm-infer``, ``lvebm-eval`` and ``lvebm-reconstruct``
of ``lvebm_lightning.inference.commands`` call the same functions)::

    from lvebm_lightning.inference import load, sample, infer, evaluate, reconstruct
    model = load("outputs/<run>/checkpoints/last.ckpt")
    x = sample(model, 10_000)                        # [n, dx]: the model's own p(x), fresh long chains
    x, z = sample(model, 10_000, pairs=True)         # and their latents [n, dz]
    z = infer(model, x_new, n_particles=64)          # [B, K, dz]: posterior particles z ~ p(z | x_b)
    post = infer_checked(model, x_new)               # and whether chains from two start sets agree, per datum
    metrics = evaluate(model, "test.npy")            # W2 (and floor), exact NLL (dx + dz <= 3), ELBO
    out = reconstruct(model, x_partial)              # NaN entries sampled given the rest: out["samples"] [B, S, dx]

Inputs and outputs are in the data's own units (the checkpoint holds the standardisation); arrays are NumPy.

- **Metrics** are those of the validation callback with the model samples drawn from the same random stream, so
  ``evaluate(model, "val")`` on the run's own validation split gives the val/w2, val/w2_floor and val/nll that
  training logged at the checkpoint's step (``inference.evaluation``). The W2 floor uses the run's training
  split (rebuilt from the config in the checkpoint) as the reference sample, or, when that cannot be rebuilt,
  one half of the given data against the other. The ELBO here bounds log p(x) of the given data by the
  validation callback's path (``metrics.evaluation.posterior_bounds``): q_b a Gaussian mixture around K fresh
  posterior particles of each datum (the baselines: their own draws; the encoder also its own density).
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "evaluate": "evaluation", "infer": "draws", "infer_checked": "draws", "sample": "draws",
    "InferenceError": "checkpoint", "LoadedModel": "checkpoint", "load": "checkpoint", "load_data": "checkpoint",
    "reconstruct": "reconstruction",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    """The public names, imported on first use: the command line reads ``inference.options`` and
    ``inference.arguments`` without importing torch."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
