"""Data-parallel learner replicas on real ranks, each training on different episodes.
Usage: check_replicas.py mpi|torch identical|uneven|diverge"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import install_abort_hooks  # noqa: E402
from test_training_arena import filled_episodes, small_config  # noqa: E402

from dvla_hpc.learn.replicas import LearnerReplicas, ReplicaDivergence  # noqa: E402
from dvla_hpc.runtime import assembly  # noqa: E402
from dvla_hpc.runtime.blueprint import Blueprint  # noqa: E402

install_abort_hooks()
world = MPI.COMM_WORLD
rank, size = world.Get_rank(), world.Get_size()
backend, mode = sys.argv[1], sys.argv[2]
cfg = small_config()
cfg.learn.groups_per_update = 2 * size  # each replica trains its share: two groups
cfg.learn.allreduce_bucket_mib = 0.05  # several buckets for this small model
bp = Blueprint.from_config(cfg)
group = None
if backend == "torch":
    from dvla_hpc.planes.torch_plane import init_torch_plane
    everyone = list(range(size))
    plane = init_torch_plane(world, everyone, everyone, everyone, torch.device("cpu"))
    group = plane.learners
replicas = LearnerReplicas(world.Dup(), group, cfg.learn.allreduce_bucket_mib, check=True)
learner = assembly.build_learner(bp, torch.device("cpu"), replicas)
assert replicas.bucket_elements < learner.flat.numel(), "the test wants several gradient buckets"

everyone = np.empty((size, learner.flat.numel()), dtype=np.float32)
for update in range(3):
    lengths = [25, 25, 7, 12] if rank % 2 == 0 else [25, 25, 25, 25]  # uneven sample counts
    pool = filled_episodes(bp, lengths, seed=100 * update + rank)  # every replica its own data
    groups = [pool.slots[:2], pool.slots[2:]]
    if mode == "uneven" and rank == 1:
        for view in pool.slots:
            view["version"][:] = -99  # all stale: this replica contributes no samples
    if mode == "diverge" and rank == 1 and update == 1:
        learner.flat[0] += 1e-3
    try:
        stats = learner.update(groups)
    except ReplicaDivergence as err:
        assert mode == "diverge" and update == 1, err
        print(f"rank {rank}: divergence caught: {err}", flush=True)
        world.Barrier()
        sys.exit(0)
    world.Allgather(learner.flat.numpy(), everyone)  # an independent, bitwise comparison
    assert all((everyone[r] == everyone[0]).all() for r in range(size)), f"update {update}: replicas differ"
    assert learner.version == update + 1
    if mode == "uneven" and rank == 1:
        assert stats.samples == 0
assert mode != "diverge", "the divergence was not caught"
assert replicas.checks == 3
if rank == 0:
    print(f"replicas OK: {size} learners, {backend}, {mode}, 3 updates bitwise identical", flush=True)
