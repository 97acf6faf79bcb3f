"""ParticleStore keeps exactly what it is given: written particles read back bit for bit, other data untouched,
and a rank's shard of a whole store is the rows it owns (i mod W = r)."""

from __future__ import annotations

import torch

from lvebm_lightning.particles.store import ParticleStore


def test_written_particles_read_back_exactly_and_nothing_else_changes():
    store = ParticleStore(n_data=23, n_particles=3, dim=2, rank=1, world_size=2)
    store.init_(torch.Generator().manual_seed(0))
    before = store.values.clone()
    index = torch.tensor([7, 1, 21])  # owned by rank 1, out of order
    new = torch.randn(3, 3, 2, generator=torch.Generator().manual_seed(1))
    store.set(index, new)
    assert torch.equal(store.get(index), new)
    assert torch.equal(store.get(torch.tensor([21])), new[2:])
    rows = store.owned.tolist()
    untouched = [j for j, i in enumerate(rows) if i not in (7, 1, 21)]
    assert torch.equal(store.values[untouched], before[untouched])


def test_a_whole_store_is_sharded_by_index_and_gathered_back():
    full = torch.randn(11, 2, 1, generator=torch.Generator().manual_seed(2))
    shards = []
    for rank in range(3):
        store = ParticleStore(11, 2, 1, rank=rank, world_size=3)
        store.load_full(full)
        assert torch.equal(store.get(store.owned), full[rank::3])
        shards.append(store.full())  # one process: this rank's rows, NaN elsewhere
    gathered = torch.stack(shards).nan_to_num(0.0).sum(0)
    assert torch.equal(gathered, full)
    assert all(int(s.isnan().any(dim=(1, 2)).sum()) == 11 - len(range(r, 11, 3)) for r, s in enumerate(shards))
