"""Weight broadcast down the distribution tree over torch.distributed (NCCL on GPUs, gloo on CPU):
GB/s per version and whether every member's bytes equal the root's.

    mpiexec -n 4 python -m dvla_hpc.bench tree_bandwidth [--out DIR] [--versions 5] [key=value ...]

Every rank is a tree member (rank 0 the root); `layout.ranks_per_node` / `nodes_per_switch`
emulate the topology. The buffer is the flat fp32 weights of `model.preset` (parameters counted
on the meta device). NCCL refuses two ranks on one GPU: where ranks share a GPU the tree runs on
gloo through host copies (GPU -> host at the root, host -> GPU at each member, both timed), and
the JSON says so."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from mpi4py import MPI

from dvla_hpc.bench.runs import write_results
from dvla_hpc.config.loader import load_config
from dvla_hpc.learn.replicas import weights_checksum
from dvla_hpc.model.presets import count_parameters
from dvla_hpc.planes.backoff import Backoff, wait_requests
from dvla_hpc.planes.broadcast_tree import plan_tree
from dvla_hpc.runtime.blueprint import Blueprint
from dvla_hpc.runtime.devices import device_kind, visible_gpus
from dvla_hpc.runtime.topology import detect_placement


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--out", default="bench_out/tree_bandwidth")
    parser.add_argument("--versions", type=int, default=5)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    from dvla_hpc.planes.torch_plane import init_torch_plane
    from dvla_hpc.planes.torch_tree import TorchTreeBroadcast
    from dvla_hpc.runtime.launch_check import join_world

    world = join_world()
    if world is None:
        return 2
    rank, size = world.Get_rank(), world.Get_size()
    cfg = load_config(args.config, args.overrides)
    bp = Blueprint.from_config(cfg)
    params = count_parameters(cfg.model, bp.spec)
    kind = device_kind(cfg.run.device, {rank: visible_gpus()})
    device = torch.device("cuda", rank % visible_gpus()) if kind == "cuda" else torch.device("cpu")
    if kind == "cuda":
        torch.cuda.set_device(device)
    node_of, switch_of = detect_placement(world, cfg.layout.ranks_per_node, cfg.layout.nodes_per_switch)
    everyone = list(range(size))
    per_node = sum(1 for n in node_of if n == node_of[rank])
    via_host = kind == "cuda" and per_node > visible_gpus()
    plane = init_torch_plane(world, everyone, everyone, [0], torch.device("cpu") if via_host else device)
    links = plan_tree(everyone, 0, node_of, switch_of, cfg.layout.tree_fanout)[rank]
    buffer = torch.zeros(params, dtype=torch.float32, device=device)
    wire = torch.zeros(params, dtype=torch.float32).pin_memory() if via_host else buffer
    tree = TorchTreeBroadcast(plane, everyone, links, wire, cfg.layout.broadcast_chunk_kib * 1024)
    seconds, identical = [], []
    sums = np.zeros(2, dtype=np.int64)
    low, high = np.empty_like(sums), np.empty_like(sums)
    for version in range(args.versions):
        if rank == 0:
            buffer.uniform_(-1, 1, generator=None)
        wait_requests(world.Ibarrier(), what="start barrier")
        if kind == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        if rank == 0:
            if via_host:
                wire.copy_(buffer)
            tree.start(version, wire)
        else:
            tree.post_receive(wire)
        backoff = Backoff(1e-3)
        while (got := tree.progress()) is None or got is False:
            backoff.idle()
        assert rank == 0 or got == version, f"rank {rank} got version {got}, expected {version}"
        if via_host and rank != 0:
            buffer.copy_(wire)
        if kind == "cuda":
            torch.cuda.synchronize(device)
        wait_requests(world.Ibarrier(), what="end barrier")
        seconds.append(time.perf_counter() - t0)
        sums[:] = weights_checksum(buffer)
        wait_requests(world.Iallreduce(sums, low, op=MPI.MIN), world.Iallreduce(sums, high, op=MPI.MAX))
        identical.append(bool((low == high).all()))
    tree.cancel()
    plane.shutdown()
    if rank == 0:
        nbytes = params * 4
        best = min(seconds[1:] or seconds)
        backend = f"{plane.backend} via host copies (ranks share a GPU)" if via_host else plane.backend
        results = {"ranks": size, "device": str(device), "backend": backend, "preset": cfg.model.preset,
                   "parameters": params, "bytes": nbytes, "chunk_kib": cfg.layout.broadcast_chunk_kib,
                   "seconds_per_version": [round(s, 4) for s in seconds],
                   "gb_per_s_best": round(nbytes / best / 1e9, 3),
                   "bytes_identical_every_version": all(identical)}
        print(f"{size} ranks, {backend} on {device}: {nbytes / 1e9:.2f} GB per version, best "
              f"{results['gb_per_s_best']:.2f} GB/s, identical on every member: {all(identical)}")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_results(out / "tree_bandwidth.json", results)
    return 0 if all(identical) else 1


if __name__ == "__main__":
    sys.exit(main())
