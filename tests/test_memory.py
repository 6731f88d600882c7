import threading

import numpy as np
import torch
from torch import nn

from dvla_hpc.memory.slab_pool import ALIGN, SlabLayout, SlabPool
from dvla_hpc.memory.static_pool import DoubleBufferedWeights, flatten_parameters


def test_parameters_become_views_of_one_flat_buffer():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    before = [p.detach().clone() for p in model.parameters()]
    flat = flatten_parameters(model)
    assert flat.numel() == sum(p.numel() for p in model.parameters())
    for p, old in zip(model.parameters(), before):
        assert torch.equal(p.detach(), old)
    flat.zero_()
    assert all(float(p.detach().abs().sum()) == 0 for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    assert flat.abs().sum() > 0  # the optimizer's in-place updates land in the flat buffer


def test_double_buffer_swaps_only_staged_versions():
    holder = DoubleBufferedWeights(lambda: nn.Linear(2, 2), initial_version=-1)
    model, version = holder.active_model()
    assert version == -1 and not holder.swap_if_staged()
    staging = holder.staging_buffer(timeout=0.1)
    staging.fill_(3.0)
    holder.mark_staged(7)
    assert holder.staging_buffer(timeout=0.05) is None  # staged but not yet swapped in
    assert holder.swap_if_staged()
    model, version = holder.active_model()
    assert version == 7
    assert all(torch.all(p == 3.0) for p in model.parameters())
    assert holder.staging_buffer(timeout=0.1) is not None


def test_staging_waits_for_the_swap_across_threads():
    holder = DoubleBufferedWeights(lambda: nn.Linear(2, 2))
    holder.staging_buffer(timeout=0.1)
    holder.mark_staged(1)
    got = []
    waiter = threading.Thread(target=lambda: got.append(holder.staging_buffer(timeout=5)))
    waiter.start()
    holder.swap_if_staged()
    waiter.join(timeout=5)
    assert got and got[0] is not None


def test_slab_layout_fields_are_aligned_and_disjoint():
    layout = SlabLayout("t", [("a", np.int64, (3,)), ("b", np.uint8, (5, 2)), ("c", np.float32, (4,))])
    offsets = [f.offset for f in layout.fields.values()]
    assert all(o % ALIGN == 0 for o in offsets)
    raw = np.zeros(layout.nbytes, dtype=np.uint8)
    views = layout.views(raw)
    views["a"][:] = -1
    views["b"][:] = 7
    views["c"][:] = 1.5
    assert views["a"].tolist() == [-1, -1, -1] and views["b"].shape == (5, 2)
    assert np.all(views["b"] == 7) and np.all(views["c"] == 1.5)


def test_slab_pool_recycles_ids_and_tracks_high_water():
    pool = SlabPool(SlabLayout("t", [("x", np.float32, (8,))]), count=3)
    slots = [pool.acquire(timeout=0.1) for _ in range(3)]
    assert sorted(slots) == [0, 1, 2]
    assert pool.acquire(timeout=0.01) is None  # exhausted: the caller waits, nothing is allocated
    pool.release(slots[1])
    assert pool.acquire(timeout=0.1) == slots[1]
    assert pool.high_water == 3 and pool.in_use == 3
    pool.slots[0]["x"][:] = 2.0
    assert pool.raw[0].view(np.float32)[:8].sum() == 16.0
