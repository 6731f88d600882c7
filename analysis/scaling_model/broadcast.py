"""One weight version down the distribution tree on an otherwise idle platform: the time until the
last holder has it. The tree is `plan_tree`'s, at any fan-out."""
from __future__ import annotations

from dataclasses import replace

from . import actors, platform
from .placement import place
from .scenario import Scenario
from .simgrid_import import load_simgrid


def broadcast_s(sc: Scenario) -> float:
    """In this process; its first SimGrid engine."""
    sg = load_simgrid()
    engine = platform.engine(sg)
    hosts = (platform.one_machine if sc.platform == "machine" else platform.fat_tree)(sg, sc)
    job = actors.Job(sc, hosts)
    root = sc.placement.learners[0]
    for rank, links in sc.placement.tree.items():
        sg.Actor.create(f"tree{rank}", job.host_of(rank), actors.tree_member, sg, job, rank, links, 1)
    sg.Actor.create("publish", job.host_of(root), actors.send, sg, job, root, "tree", root, 1,
                    actors.CONTROL_BYTES)
    engine.run()
    return max(seconds for _, seconds in job.broadcast_s)


def with_fanout(sc: Scenario, ranks_per_node: int, fanout: int) -> Scenario:
    """The same job with the tree planned at another fan-out."""
    p = sc.placement
    again = place(len(p.node_of), len(p.learners), len(p.infers), ranks_per_node, nodes_per_switch=32,
                  tree_fanout=fanout)
    return replace(sc, placement=again)
