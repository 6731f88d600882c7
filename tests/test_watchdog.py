"""SilenceWatch: the rank silent longest past the timeout is named; a word from it resets it."""
from __future__ import annotations

import pytest

from dvla_hpc.roles.watchdog import RankSilent, SilenceWatch


def test_silence_past_the_timeout_names_the_rank():
    now = [100.0]
    watch = SilenceWatch([1, 2, 3], 5.0, lambda rank: f"rank {rank} (sim) on host h{rank}", lambda: now[0])
    now[0] += 4.0
    watch.heard(1)
    watch.heard(3)
    watch.check()
    now[0] += 1.5
    with pytest.raises(RankSilent, match=r"rank 2 \(sim\) on host h2 has sent nothing for 5.5 s"):
        watch.check()
    watch.heard(2)
    watch.check()
    watch.heard(7)  # not watched: ignored
    assert 7 not in watch.last_heard


def test_timeout_zero_never_fires():
    now = [0.0]
    watch = SilenceWatch([0], 0.0, str, lambda: now[0])
    now[0] += 1e9
    watch.check()


@pytest.mark.parametrize("world, root", [(3, 2), (9, 0), (64, 63), (513, 100), (4096, 4095)])
def test_watch_tree_links_every_rank_both_ways_with_bounded_degree(world, root):
    from dvla_hpc.roles.watchdog import WATCH_FANOUT, watch_neighbours
    neighbours = {rank: watch_neighbours(world, root, rank) for rank in range(world)}
    parent = {rank: links[0] for rank, links in neighbours.items() if rank != root}
    assert len(parent) == world - 1
    for rank, links in neighbours.items():
        assert len(links) <= WATCH_FANOUT + 1 and rank not in links
        children = links if rank == root else links[1:]
        assert all(parent[child] == rank for child in children)  # watched both ways
    depth = {root: 0}
    for rank in range(world):  # every rank reaches the root: one tree, no cycle
        seen, at = 0, rank
        while at != root:
            at, seen = parent[at], seen + 1
            assert seen <= world
        depth[rank] = seen
    assert max(depth.values()) <= 1 + (world - 1).bit_length() // 3 + 1


def test_telemetry_period_keeps_the_root_inbound_rate_flat():
    from dvla_hpc.roles.watchdog import ROOT_TELEMETRY_PER_S, telemetry_every_s
    assert telemetry_every_s(4, 2.0) == 2.0
    for world in (64, 512, 4096):
        assert (world - 1) / telemetry_every_s(world, 2.0) <= ROOT_TELEMETRY_PER_S
