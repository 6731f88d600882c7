"""Roles, nodes and the weight tree of a job, planned by dvla_hpc's own code (`plan_layout`,
`plan_tree`), so the model places ranks as a real job would."""
from __future__ import annotations

from dvla_hpc.config.schema import LayoutConfig
from dvla_hpc.planes.broadcast_tree import plan_tree
from dvla_hpc.runtime.topology import plan_layout

from .scenario import Placement


def place(ranks: int, learn_ranks: int, infer_ranks: int, ranks_per_node: int = 0,
          nodes_per_switch: int = 0, tree_fanout: int = LayoutConfig.tree_fanout) -> Placement:
    """`ranks_per_node` = 0: one node (this machine); `infer_ranks` = 0: one per node."""
    node_of = [r // ranks_per_node if ranks_per_node else 0 for r in range(ranks)]
    switch_of = [n // nodes_per_switch if nodes_per_switch else 0 for n in node_of]
    plan = plan_layout(ranks, learn_ranks, infer_ranks, node_of, switch_of)
    learners = tuple(plan.ranks("learn"))
    infers = tuple(plan.ranks("infer"))
    root = plan.learner_root
    tree = plan_tree([root, *infers], root, node_of, switch_of, tree_fanout)
    return Placement(sims=tuple(plan.ranks("sim")), infers=infers,
                     learners=(root, *[r for r in learners if r != root]),
                     node_of=tuple(node_of), switch_of=tuple(switch_of),
                     infer_for_sim=dict(plan.infer_for_sim), tree=tree)
