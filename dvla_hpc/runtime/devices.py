"""Which device each rank computes on, checked for the whole job before anything is allocated.

Sim ranks are CPU-only and never ask CUDA anything (no context, no driver call). Infer and learner
ranks ask how many GPUs their node shows (`torch.cuda.device_count()` honours CUDA_VISIBLE_DEVICES
as schedulers set it); every rank then derives the same placement from the gathered counts:
on each node the learners take GPUs 0..L-1 for themselves and the infer ranks share the rest
(all of them when the learners took every GPU)."""
from __future__ import annotations

import socket
from contextlib import nullcontext
from typing import TYPE_CHECKING, Mapping

from dvla_hpc.runtime.topology import RolePlan

if TYPE_CHECKING:
    import torch

    from dvla_hpc.config.schema import RunConfig

GPU_ROLES = ("infer", "learn")


class DeviceError(ValueError):
    """The requested devices cannot be had; the message says what to change."""


def visible_gpus() -> int:
    import torch  # only infer and learner ranks ask: sim ranks import no torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def device_kind(requested: str, gpus_seen: Mapping[int, int]) -> str:
    """"cuda" or "cpu" for the whole job, from each GPU rank's count of visible devices."""
    if requested == "cpu" or not gpus_seen:
        return "cpu"
    without = sorted(rank for rank, count in gpus_seen.items() if count == 0)
    if requested == "cuda" and without:
        raise DeviceError(
            f"run.device=cuda but rank(s) {without} see no CUDA device (on {socket.gethostname()}: "
            f"{visible_gpus()} visible); use run.device=cpu, or run.device=auto to fall back to the "
            f"CPU, or give those ranks GPUs (check CUDA_VISIBLE_DEVICES and the job's GPU request)")
    return "cpu" if without else "cuda"


def gpu_assignment(plan: RolePlan, gpus_on_node: Mapping[int, int]) -> dict[int, int]:
    """The node-local GPU index of every infer and learner rank."""
    assigned: dict[int, int] = {}
    for node in sorted(set(plan.node_of)):
        ranks = [r for r in range(plan.world_size) if plan.node_of[r] == node]
        learners = [r for r in ranks if plan.roles[r] == "learn"]
        infers = [r for r in ranks if plan.roles[r] == "infer"]
        gpus = gpus_on_node.get(node, 0)
        if len(learners) > gpus:
            raise DeviceError(
                f"node {node} hosts {len(learners)} learner ranks {learners} but shows {gpus} GPU(s): "
                f"each learner needs a GPU of its own; lower layout.learn_ranks, spread the learners "
                f"over more nodes (fewer ranks per node), or use run.device=cpu")
        for i, rank in enumerate(learners):
            assigned[rank] = i
        spare = list(range(len(learners), gpus)) or list(range(gpus))
        for i, rank in enumerate(infers):
            assigned[rank] = spare[i % len(spare)]
    return assigned


def local_device(requested: str) -> "torch.device":
    """Single-process mode: the first visible GPU, or the CPU."""
    import torch
    gpus = visible_gpus() if requested != "cpu" else 0
    kind = device_kind(requested, {0: gpus})
    return torch.device("cuda", 0) if kind == "cuda" else torch.device("cpu")


def autocast(device: "torch.device", enabled: bool):
    """bf16 autocast for forward passes when `enabled` (decided by `uses_bf16`); a no-op otherwise,
    and on a GPU without bf16."""
    import torch
    if not enabled or (device.type == "cuda" and not torch.cuda.is_bf16_supported()):
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def uses_bf16(device: "torch.device", run: "RunConfig") -> bool:
    """Forward passes under bf16 autocast: on a GPU with bf16 when run.autocast_bf16; on the CPU
    only when run.cpu_bf16 asks for it, since bf16 is slower than fp32 on CPUs without bf16
    instructions (AVX512-BF16 or AMX), which are refused."""
    import torch
    if device.type == "cuda":
        return run.autocast_bf16 and torch.cuda.is_bf16_supported()
    if run.cpu_bf16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise DeviceError("run.cpu_bf16=true, but this CPU has no bf16 instructions (AVX512-BF16 or AMX); "
                          "set run.cpu_bf16=false")
    return run.cpu_bf16


def on_cuda(device: "torch.device | str") -> bool:
    return str(device).startswith("cuda")


def data_backend(requested: str, devices: Mapping[int, "torch.device | str"], plan: RolePlan) -> str:
    """auto: torch.distributed when the infer and learner ranks compute on GPUs of their own
    (NCCL refuses two ranks of one communicator on one GPU), mpi4py otherwise."""
    members = plan.ranks("infer") + plan.ranks("learn")
    on_gpu = any(on_cuda(devices[r]) for r in members)
    shared = shared_gpus(plan, devices, members)
    if requested == "torch" and on_gpu and shared:
        raise DeviceError(
            f"planes.data_backend=torch on GPUs needs a GPU per infer and learner rank (NCCL refuses "
            f"two ranks on one GPU), but {shared}; use planes.data_backend=mpi (or auto), or fewer "
            f"infer ranks per node")
    if requested != "auto":
        return requested
    return "torch" if on_gpu and not shared else "mpi"


def shared_gpus(plan: RolePlan, devices: Mapping[int, "torch.device | str"], members: list[int]) -> str:
    """'' or a description of the first GPU two members share."""
    seen: dict[tuple[int, str], int] = {}
    for rank in members:
        if not on_cuda(devices[rank]):
            continue
        key = (plan.node_of[rank], str(devices[rank]))
        if key in seen:
            return f"ranks {seen[key]} and {rank} share {key[1]} on node {key[0]}"
        seen[key] = rank
    return ""
