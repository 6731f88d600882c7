"""Device placement: learners get GPUs of their own, infer ranks share the rest, and a placement
that cannot work is refused with what to change. GPU-only checks skip without CUDA."""
from __future__ import annotations

import pytest
import torch

from dvla_hpc.config.loader import load_config
from dvla_hpc.runtime.devices import (DeviceError, autocast, data_backend, device_kind, gpu_assignment,
                                      local_device, uses_bf16)
from dvla_hpc.runtime.topology import RolePlan

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def two_nodes_of_eight() -> RolePlan:
    """16 ranks on two nodes: node 0 has 6 sims + 2 infer; node 1 has 4 sims, 2 infer, 2 learners."""
    roles = (["sim"] * 6 + ["infer"] * 2) + (["sim"] * 4 + ["infer"] * 2 + ["learn"] * 2)
    return RolePlan(tuple(roles), tuple([0] * 8 + [1] * 8), tuple([0] * 16))


def test_learners_take_their_own_gpus_and_infer_ranks_share_the_rest():
    plan = two_nodes_of_eight()
    gpu = gpu_assignment(plan, {0: 8, 1: 8})
    assert set(gpu) == set(plan.ranks("infer")) | set(plan.ranks("learn"))
    assert [gpu[r] for r in plan.ranks("learn")] == [0, 1]
    assert [gpu[r] for r in (12, 13)] == [2, 3]  # node 1's infer ranks skip the learners' GPUs
    assert [gpu[r] for r in (6, 7)] == [0, 1]


def test_infer_ranks_share_a_gpu_when_the_learners_took_every_one():
    plan = RolePlan(("sim", "sim", "infer", "infer", "learn"), (0,) * 5, (0,) * 5)
    assert gpu_assignment(plan, {0: 1}) == {2: 0, 3: 0, 4: 0}


def test_more_learners_on_a_node_than_gpus_is_refused_with_the_fix():
    plan = two_nodes_of_eight()
    with pytest.raises(DeviceError, match=r"node 1 hosts 2 learner ranks \[14, 15\] but shows 1 GPU"):
        gpu_assignment(plan, {0: 8, 1: 1})


def test_cuda_asked_where_a_rank_sees_none_is_refused_and_auto_falls_back():
    with pytest.raises(DeviceError, match=r"run.device=cuda but rank\(s\) \[3\] see no CUDA device"):
        device_kind("cuda", {2: 1, 3: 0})
    assert device_kind("auto", {2: 1, 3: 0}) == "cpu"
    assert device_kind("auto", {2: 1, 3: 1}) == "cuda"
    assert device_kind("cpu", {2: 1}) == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a host without CUDA")
def test_single_process_cuda_without_a_gpu_is_refused():
    with pytest.raises(DeviceError, match="run.device=cuda"):
        local_device("cuda")
    assert local_device("auto") == torch.device("cpu")


def test_the_cpu_computes_in_fp32_unless_cpu_bf16_asks():
    cpu = torch.device("cpu")
    run = load_config(None, ["run.autocast_bf16=true"]).run
    assert not uses_bf16(cpu, run)  # autocast_bf16 is for GPUs
    with autocast(cpu, uses_bf16(cpu, run)):
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.float32
    run = load_config(None, ["run.cpu_bf16=true"]).run
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        with pytest.raises(DeviceError, match="run.cpu_bf16"):
            uses_bf16(cpu, run)
        return
    with autocast(cpu, uses_bf16(cpu, run)):
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.bfloat16


@pytest.mark.gpu
@CUDA
def test_bf16_autocast_on_cuda():
    device = torch.device("cuda", 0)
    with autocast(device, True):
        y = torch.nn.Linear(4, 4).to(device)(torch.randn(2, 4, device=device))
    assert y.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32)


def test_the_data_backend_follows_the_devices():
    plan = RolePlan(("sim", "sim", "infer", "infer", "learn"), (0,) * 5, (0,) * 5)
    cpu = {r: torch.device("cpu") for r in range(5)}
    own = {**cpu, 2: torch.device("cuda", 1), 3: torch.device("cuda", 2), 4: torch.device("cuda", 0)}
    shared = {**own, 3: torch.device("cuda", 1)}
    assert data_backend("auto", cpu, plan) == "mpi"
    assert data_backend("auto", own, plan) == "torch"  # NCCL: every member has a GPU of its own
    assert data_backend("auto", shared, plan) == "mpi"
    assert data_backend("torch", cpu, plan) == "torch"  # gloo on CPU tensors
    with pytest.raises(DeviceError, match="ranks 2 and 3 share cuda:1 on node 0"):
        data_backend("torch", shared, plan)



@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(),
                    reason="this CPU has no bf16 instructions")
def test_a_cpu_learner_trains_under_cpu_bf16():
    from dvla_hpc.bench.lane_costs import synthetic_groups
    from dvla_hpc.runtime import assembly
    from dvla_hpc.runtime.blueprint import Blueprint
    bp = Blueprint.from_config(load_config(None, ["run.cpu_bf16=true", "env.image_size=32"]))
    learner = assembly.build_learner(bp, torch.device("cpu"))
    assert learner.bf16
    before = learner.flat.clone()
    _, groups = synthetic_groups(bp)
    assert learner.update(groups).samples > 0
    assert torch.isfinite(learner.flat).all() and not torch.equal(learner.flat, before)
