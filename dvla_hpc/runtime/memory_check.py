"""Every rank prints its memory plan at start and refuses a plan that does not fit its device."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from dvla_hpc.memory.plan import MemoryPlan, plan_memory, refuse_if_too_big
from dvla_hpc.runtime.blueprint import Blueprint
from dvla_hpc.runtime.devices import uses_bf16

if TYPE_CHECKING:
    import torch

GIB = 2**30


def rank_plan(bp: Blueprint, role: str, device: "torch.device | None", samplers: int, learners: int = 1,
              infer_ranks: int = 1) -> MemoryPlan:
    bf16 = uses_bf16(device, bp.cfg.run) if role != "sim" else False
    return plan_memory(bp, role, device, samplers, learners, infer_ranks=infer_ranks,
                       bytes_per_activation=2 if bf16 else 4)


def one_line(plan: MemoryPlan) -> str:
    rows = ", ".join(f"{row} {nbytes / GIB:.3g}" for row, nbytes in plan.rows.items() if nbytes)
    free = "unknown" if plan.free_bytes is None else f"{plan.free_bytes / GIB:.3g}"
    return (f"memory plan: {plan.role} on {plan.device}, {plan.parameters:,} parameters; GiB {rows}; "
            f"needs {plan.device_bytes / GIB:.3g} of {free} free")


def check_memory_plan(bp: Blueprint, role: str, device: "torch.device | None", samplers: int, learners: int = 1,
                      infer_ranks: int = 1, rank: int | None = None) -> MemoryPlan:
    """Print the plan (one line per MPI rank, the table in one process), then refuse it if it
    does not fit, before anything is allocated."""
    plan = rank_plan(bp, role, device, samplers, learners, infer_ranks)
    text = plan.format() if rank is None else f"rank {rank}: {one_line(plan)}"
    print(text, file=sys.stderr, flush=True)
    refuse_if_too_big(plan)
    return plan
