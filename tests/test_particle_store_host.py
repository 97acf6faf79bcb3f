"""The host-memory particle store (``sampler.posterior.store_device=cpu``) gives the same values as the device one."""

from __future__ import annotations

import torch

from lvebm_lightning.particles.store import ParticleStore


def test_host_store_matches_the_device_store_through_gets_and_sets():
    n, k, dz = 50, 3, 2
    stores = [ParticleStore(n, k, dz), ParticleStore(n, k, dz)]
    for store in stores:
        store.init_(torch.Generator().manual_seed(0))
    stores[1].keep_on_host()
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):  # random batches, repeated indices across batches, read back right after a write
        index = torch.randperm(n, generator=gen)[:8]
        moved = stores[0].get(index) + torch.randn(8, k, dz, generator=gen)
        for store in stores:
            store.set(index, moved)
            assert torch.equal(store.get(index), moved)
    assert torch.equal(stores[1].full(), stores[0].full())
    assert stores[1].compute_device == stores[0].device


def test_sampler_config_reaches_every_kernel(make_cfg):
    """sampler.compile / autocast / kernel and posterior.store_device travel from the config to the module's kernels."""
    from hydra.utils import instantiate

    from lvebm_lightning.training.run import build_model

    cfg = make_cfg("sampler.compile=true", "sampler.autocast=true", "sampler.negative.kernel=ula",
                   "sampler.negative.kernel=ula", "sampler.posterior.store_device=cpu")
    model = build_model(cfg, instantiate(cfg.data).prepare())
    assert model.posterior.config.compile and model.negative_config.compile and model.long_chain_config().compile
    assert model.posterior.config.autocast and model.long_chain_config().autocast
    assert model.posterior.config.kernel == "mala" and model.negative_config.kernel == "ula"
    assert model.long_chain_config().kernel == "ula"  # evaluation follows the negative kernel's Metropolis setting
    assert model.hparams.posterior["store_device"] == "cpu"
    model.posterior.setup(model.n_data, model.dz, 0, 1, torch.device("cpu"), torch.Generator())
    assert model.posterior.store.compute_device == torch.device("cpu")  # kept on the host, delivered to the device
    smoke = build_model(make_cfg(run="smoke"), instantiate(cfg.data).prepare())  # debug=fast: eager chains
    assert not smoke.negative_config.compile and smoke.negative_config.kernel == "mala"


def test_the_main_config_compiles_the_chains_and_the_smoke_run_does_not(tmp_path):
    """``python train.py`` compiles every chain (docs/benchmarks.md "Inner-loop speed": 1.8x end to end on a CPU);
    ``debug=fast``, whose chains are too short to pay back the compilation, runs them eagerly."""
    from lvebm_lightning.config.compose import compose_config

    main = compose_config(tmp_path / "main", [])
    assert main.sampler.compile and main.model.posterior.compile and main.model.negative.compile
    assert not compose_config(tmp_path / "smoke", ["debug=fast"]).model.negative.compile
