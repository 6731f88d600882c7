import threading

import numpy as np
import pytest
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


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
LATE = 200_000_000  # GPU cycles a stream spins first (torch.cuda._sleep): its next work runs late


def gpu_holder() -> DoubleBufferedWeights:
    """Version 0 (all zeros) of a 256 -> 1 linear map: its output is 256 times a version's value."""
    holder = DoubleBufferedWeights(lambda: nn.Linear(256, 1, bias=False), device=torch.device("cuda", 0))
    holder.load_initial(torch.zeros_like(holder.buffers[0]), 0)
    return holder


def stage(holder: DoubleBufferedWeights, value: float, version: int, late: bool = False) -> None:
    """What the distribute lane does, on a stream of its own, optionally behind a long kernel."""
    with torch.cuda.stream(torch.cuda.Stream(holder.device)):
        staging = holder.staging_buffer(timeout=1.0)
        if late:
            torch.cuda._sleep(LATE)
        staging.fill_(value)
        holder.mark_staged(version)


@pytest.mark.gpu
@CUDA
def test_a_reader_on_another_stream_waits_for_a_staged_versions_bytes():
    holder = gpu_holder()
    stage(holder, 1.0, 1, late=True)
    with torch.cuda.stream(torch.cuda.Stream(holder.device)):
        assert holder.swap_if_staged()
        model, version = holder.active_model()
        out = model(torch.ones(1, 256, device=holder.device)).item()
    assert (version, out) == (1, 256.0)  # 0.0 had the read overtaken the staging copy


@pytest.mark.gpu
@CUDA
def test_a_staged_version_does_not_overwrite_a_buffer_still_being_read():
    holder = gpu_holder()
    device = holder.device
    reader = torch.cuda.Stream(device)
    stage(holder, 1.0, 1)
    with torch.cuda.stream(reader):
        assert holder.swap_if_staged()
        model, _ = holder.active_model()
        torch.cuda._sleep(LATE)
        out = model(torch.ones(1, 256, device=device))  # reads version 1's buffer, late
    stage(holder, 2.0, 2)
    with torch.cuda.stream(reader):
        assert holder.swap_if_staged()  # version 1's buffer is the staging buffer now
    stage(holder, 3.0, 3)
    torch.cuda.synchronize(device)
    assert out.item() == 256.0  # 768.0 had version 3 overwritten it before the late read
