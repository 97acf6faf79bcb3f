"""A checkpoint written by the flat package layout (``tests/data/flat_layout.ckpt``: ``lvebm_lightning.energy``,
``metropolis: true`` with ``kernel: null``) loads and draws exactly what the code that wrote it drew."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lvebm_lightning.energies import MLPEnergy
from lvebm_lightning.inference import infer, load, sample
from lvebm_lightning.training.upgrade import upgrade

DATA = Path(__file__).parent / "data"


def test_flat_layout_checkpoint_loads_and_draws_the_same_samples():
    model = load(DATA / "flat_layout.ckpt")
    assert isinstance(model.module.energy, MLPEnergy)
    assert model.module.negative_config.kernel == "mala" and model.module.posterior.config.kernel == "mala"
    assert model.config["model"]["energy"]["_target_"] == "lvebm_lightning.energies.mlp.MLPEnergy"
    reference = np.load(DATA / "flat_layout_draws.npz")  # drawn by the flat layout's own code, same arguments
    x = sample(model, 16, n_steps=5, seed=0)
    np.testing.assert_array_equal(x, reference["x"])
    np.testing.assert_array_equal(infer(model, x, n_particles=2, n_steps=5, seed=1, start="prior"),
                                  reference["z"])


def test_upgrade_names_the_kernel_that_the_metropolis_flag_meant():
    ckpt = {"hyper_parameters": {
        "energy": {"_target_": "lvebm_lightning.decoder_energy.DecoderEnergy"},
        "lr_scheduler": {"_target_": "lvebm_lightning.schedule.warmup_cosine"},
        "posterior": {"metropolis": False, "kernel": None}, "negative": {"metropolis": True, "kernel": None},
        "long_chains": {"metropolis": None, "n_steps": 3},
    }}
    hp = upgrade(ckpt)["hyper_parameters"]
    assert hp["energy"]["_target_"] == "lvebm_lightning.energies.decoder.DecoderEnergy"
    assert hp["lr_scheduler"]["_target_"] == "lvebm_lightning.training.schedule.warmup_cosine"
    assert (hp["posterior"]["kernel"], hp["negative"]["kernel"], hp["long_chains"]["kernel"]) == ("ula", "mala", None)
    assert "metropolis" not in hp["negative"] and ckpt["hyper_parameters"]["negative"]["metropolis"] is True
