"""Pure planning: role layout, sim-to-infer service, and broadcast-tree shape (no MPI launched)."""
from __future__ import annotations

import random
from collections import deque

import pytest

from dvla_hpc.planes.broadcast_tree import TreeLinks, count_crossings, plan_tree
from dvla_hpc.runtime.topology import LayoutError, RolePlan, plan_layout, slurm_switch_name


def grid(world: int, ranks_per_node: int, nodes_per_switch: int) -> tuple[list[int], list[int]]:
    node_of = [r // ranks_per_node for r in range(world)]
    return node_of, [n // nodes_per_switch for n in node_of]


def test_auto_layout_puts_learner_last_and_one_infer_per_node() -> None:
    node_of, switch_of = grid(12, 4, 2)
    plan = plan_layout(12, learn_ranks=1, infer_ranks=0, node_of=node_of, switch_of=switch_of)
    assert plan.ranks("learn") == [11] and plan.learner_root == 11
    assert plan.ranks("infer") == [0, 4, 8]
    assert len(plan.ranks("sim")) == 8 and plan.world_size == 12
    assert all(node_of[plan.infer_for_sim[s]] == node_of[s] for s in plan.ranks("sim"))
    assert plan.sims_for(8) == [9, 10]
    assert "8 sim, 3 infer, 1 learn" in plan.describe() and "3 node(s)" in plan.describe()


def test_learners_fill_the_last_nodes() -> None:
    node_of, switch_of = grid(12, 4, 1)
    plan = plan_layout(12, learn_ranks=5, infer_ranks=0, node_of=node_of, switch_of=switch_of)
    assert plan.ranks("learn") == [7, 8, 9, 10, 11] and plan.learner_root == 7
    assert plan.ranks("infer") == [0, 4]  # node 2 is all learners: no infer rank there


def test_explicit_infer_count_spreads_over_nodes_and_serves_every_infer() -> None:
    node_of, switch_of = grid(12, 4, 1)
    plan = plan_layout(12, learn_ranks=1, infer_ranks=5, node_of=node_of, switch_of=switch_of)
    assert plan.ranks("infer") == [0, 1, 4, 5, 8]
    served = plan.infer_for_sim
    assert sorted(served) == plan.ranks("sim")
    assert all(plan.sims_for(i) for i in plan.ranks("infer"))


def test_an_infer_rank_without_local_sims_borrows_one() -> None:
    node_of, switch_of = grid(8, 4, 1)
    plan = plan_layout(8, learn_ranks=3, infer_ranks=0, node_of=node_of, switch_of=switch_of)
    assert plan.ranks("infer") == [0, 4] and plan.ranks("learn") == [5, 6, 7]
    assert plan.sims_for(0) == [1, 2] and plan.sims_for(4) == [3]


def test_sims_on_a_node_are_balanced_across_its_infer_ranks() -> None:
    plan = RolePlan(("infer", "infer") + ("sim",) * 6 + ("learn",), (0,) * 8 + (1,), (0,) * 9)
    assert [len(plan.sims_for(i)) for i in (0, 1)] == [3, 3]


def test_sims_on_a_node_without_infer_go_to_least_loaded_same_switch_first() -> None:
    roles = ("infer", "sim", "infer", "sim", "sim", "learn")
    plan = RolePlan(roles, (0, 0, 1, 1, 2, 3), (0, 0, 1, 1, 1, 1))
    assert plan.infer_for_sim == {1: 0, 3: 2, 4: 2}


@pytest.mark.parametrize("world, learn, infer, needles", [
    (1, 1, 0, ["single-process mode", "automatically"]),
    (2, 1, 0, ["2 ranks cannot host the 3 roles sim, infer, learn", "mpiexec -n 3"]),
    (4, 3, 0, ["4 ranks", "at least 5 ranks"]),
    (6, 1, 3, ["3 infer ranks but only 2 sim rank(s)", "at most 2"]),
    (6, 1, 5, ["1 learn + 5 infer", "leave a sim rank"]),
    (6, 0, 0, ["learn_ranks must be at least 1"]),
    (6, 1, -1, ["infer_ranks must be >= 0"]),
])
def test_impossible_layouts_name_the_numbers(world: int, learn: int, infer: int,
                                             needles: list[str]) -> None:
    node_of, switch_of = grid(max(world, 1), 2, 1)
    with pytest.raises(LayoutError) as caught:
        plan_layout(world, learn, infer, node_of[:world], switch_of[:world])
    for needle in needles:
        assert needle in str(caught.value)


def test_placement_lists_must_match_and_agree() -> None:
    with pytest.raises(LayoutError, match="6 ranks but 4 node ids"):
        plan_layout(6, 1, 0, [0] * 4, [0] * 6)
    with pytest.raises(LayoutError, match="node 0 appears on switches 0 and 1"):
        plan_layout(4, 1, 0, [0, 0, 1, 1], [0, 1, 1, 1])
    with pytest.raises(LayoutError, match="unknown role"):
        RolePlan(("sim", "gpu"), (0, 0), (0, 0))


def test_slurm_switch_name() -> None:
    assert slurm_switch_name("s0.s1.node7") == "s0.s1"
    assert slurm_switch_name("node7") == "" and slurm_switch_name(None) == ""


def reached_once(tree: dict[int, TreeLinks], root: int) -> bool:
    seen, queue = [root], deque([root])
    while queue:
        for child in tree[queue.popleft()].children:
            assert tree[child].parent is not None
            seen.append(child)
            queue.append(child)
    return sorted(seen) == sorted(tree) and len(seen) == len(set(seen))


def layout(switches: int, nodes: int, per_node: int) -> tuple[list[int], list[int], list[int]]:
    members = list(range(switches * nodes * per_node))
    node_of = [m // per_node for m in members]
    return members, node_of, [n // nodes for n in node_of]


@pytest.mark.parametrize("root", [0, 17, 47])
@pytest.mark.parametrize("fanout", [0, 2])
def test_tree_sends_one_copy_per_switch_and_per_node(root: int, fanout: int) -> None:
    members, node_of, switch_of = layout(switches=4, nodes=3, per_node=4)
    tree = plan_tree(members, root, node_of, switch_of, fanout)
    assert reached_once(tree, root) and tree[root].parent is None
    assert all(tree[c].parent == m for m, links in tree.items() for c in links.children)
    counts = count_crossings(tree, switch_of, node_of)
    assert counts["edges"] == 47
    assert counts["switch_crossings"] == 3  # switches other than the root's
    assert counts["node_crossings"] == 11  # nodes other than the root's
    if fanout:  # a holder leads at most a switch, a node and its own node's holders
        assert counts["max_fanout"] <= 3 * fanout and counts["depth"] > 3
    else:
        assert counts["depth"] <= 3


def test_wide_levels_are_split_but_still_cross_each_switch_once() -> None:
    members, node_of, switch_of = layout(switches=64, nodes=2, per_node=2)
    tree = plan_tree(members, 0, node_of, switch_of, max_fanout=4)
    counts = count_crossings(tree, switch_of, node_of)
    assert reached_once(tree, 0)
    assert counts["switch_crossings"] == 63 and counts["node_crossings"] == 127
    assert len(tree[0].children) <= 3 * 4
    flat = count_crossings(plan_tree(members, 0, node_of, switch_of, max_fanout=0),
                           switch_of, node_of)
    assert flat["switch_crossings"] == 63 and flat["depth"] == 3 and flat["max_fanout"] == 65


def test_tree_is_deterministic_and_ignores_member_order() -> None:
    members, node_of, switch_of = layout(switches=3, nodes=2, per_node=3)
    shuffled = members[:]
    random.Random(0).shuffle(shuffled)
    assert plan_tree(members, 5, node_of, switch_of, 2) == plan_tree(shuffled, 5, node_of, switch_of, 2)


def test_random_topologies_keep_tree_invariants() -> None:
    rng = random.Random(1)
    for _ in range(50):
        n = rng.randint(1, 60)
        node_of = sorted(rng.randint(0, 9) for _ in range(n))
        switch_of = [node // 3 for node in node_of]
        members = rng.sample(range(n), rng.randint(1, n))
        root = rng.choice(members)
        tree = plan_tree(members, root, node_of, switch_of, max_fanout=rng.choice([0, 2, 8]))
        assert reached_once(tree, root)
        counts = count_crossings(tree, switch_of, node_of)
        assert counts["switch_crossings"] == len({switch_of[m] for m in members}) - 1
        assert counts["node_crossings"] == len({node_of[m] for m in members}) - 1


def test_distribution_tree_from_a_role_plan() -> None:
    node_of, switch_of = grid(32, 4, 2)
    plan = plan_layout(32, learn_ranks=2, infer_ranks=0, node_of=node_of, switch_of=switch_of)
    members = [plan.learner_root] + plan.ranks("infer")
    tree = plan_tree(members, plan.learner_root, node_of, switch_of, 2)
    assert reached_once(tree, plan.learner_root)
    assert count_crossings(tree, switch_of, node_of)["switch_crossings"] == 3


def test_bad_tree_requests() -> None:
    with pytest.raises(ValueError, match="unique"):
        plan_tree([1, 1, 2], 1, [0, 0, 0], [0, 0, 0], 2)
    with pytest.raises(ValueError, match="root 9 is not one of the members"):
        plan_tree([0, 1], 9, [0, 0], [0, 0], 2)
