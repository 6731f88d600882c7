"""Episode starts: a GRPO group's members share one initial state, and no two groups of a run do,
whichever sampler started them."""
from __future__ import annotations

from dvla_hpc.lanes.sample import GroupSchedule


def starts(run_seed: int, sampler: int, groups: int, group_size: int = 4) -> list[tuple[int, int]]:
    schedule = GroupSchedule(run_seed, sampler, group_size)
    return [schedule.next() for _ in range(groups * group_size)]


def test_a_groups_members_share_its_key_and_seed_and_the_next_group_differs():
    first, second = starts(0, 0, 2)[:4], starts(0, 0, 2)[4:]
    assert len(set(first)) == 1 and len(set(second)) == 1
    assert first[0][0] != second[0][0] and first[0][1] != second[0][1]


def test_every_sampler_of_a_run_starts_its_own_initial_states():
    seeds = [seed for sampler in range(4) for _, seed in starts(0, sampler, 200)[::4]]
    assert len(set(seeds)) == len(seeds), "two groups of one run replay the same initial state"
    assert all(0 <= s < 2**31 for s in seeds)


def test_seeds_repeat_within_a_run_seed_and_change_with_it():
    assert starts(3, 1, 20) == starts(3, 1, 20)
    assert {s for _, s in starts(3, 1, 20)}.isdisjoint({s for _, s in starts(4, 1, 20)})
