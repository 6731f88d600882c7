"""Async flow control, the learner root's side: how many groups each sampler may have started.

At most `budget` groups are untrained at any time (started and still sampling, or complete and
queued at a learner): `ahead` updates' worth, a slack of a few groups, and a group for each extra
learner. Every learner trains the same number of groups an update, and the learner of a sampler's
k-th group is known (`learner_for_group`), so the root grants each freed group to a sampler whose
next group goes to the learner holding the fewest untrained groups, and among those to the sampler
holding the fewest (then granted the fewest so far). Every learner thus always holds its share of
the budget, without spares that grow with samplers x learners; and no sampler holds more than one
group above an even share. A straggler therefore keeps only the few groups it already holds, and
the slack is sized so that, whatever one straggler holds, the others hold an update's worth: the
learners train on what arrives instead of waiting for it. (Slack enough for the whole window would
double it with two samplers, and the samples' staleness with it.) Grants are cumulative; under MPI
a sampler hears its own when it grows (`Message.step` of GRANT)."""
from __future__ import annotations

import heapq

import numpy as np


class FlowCredit:
    def __init__(self, sampler_ids: list[int], groups_per_update: int, learners: int, ahead: int):
        if not sampler_ids or ahead < 1:
            raise ValueError(f"flow credit needs a sampler and ahead >= 1, got {sampler_ids} and {ahead}")
        self.learners = learners
        self.budget = flow_budget(len(sampler_ids), groups_per_update, learners, ahead)
        self.sampler_ids = np.asarray(sampler_ids, dtype=np.int64)
        self.granted = np.zeros(len(sampler_ids), dtype=np.int64)
        self.trained = np.zeros(len(sampler_ids), dtype=np.int64)
        self.granted_to_learner = np.zeros(learners, dtype=np.int64)
        self.told = np.full(len(sampler_ids), -1, dtype=np.int64)  # the grant each sampler last heard
        self._grant()

    def news(self) -> list[tuple[int, int]]:
        """(sampler id, grant) for each sampler whose grant grew since the last call: at most the
        groups trained since, however many samplers there are."""
        grown = np.flatnonzero(self.granted != self.told)
        self.told[:] = self.granted
        return [(int(self.sampler_ids[i]), int(self.granted[i])) for i in grown]

    def held(self) -> np.ndarray:
        """Groups each sampler may start or has started that no learner has trained yet."""
        return self.granted - self.trained

    def held_by_learner(self) -> np.ndarray:
        """Untrained groups bound for each learner (they all train the same number an update)."""
        trained_each = int(self.trained.sum()) // self.learners
        return self.granted_to_learner - trained_each

    def next_learner(self) -> np.ndarray:
        """The learner each sampler's next group goes to (lanes/sample.py's learner_for_group)."""
        return (self.sampler_ids + self.granted) % self.learners

    def update(self, trained: np.ndarray) -> None:
        """The groups of each sampler trained so far (cumulative, over every learner)."""
        self.trained = np.maximum(self.trained, trained)
        self._grant()

    def _grant(self) -> None:
        held = self.held()
        free = self.budget - int(held.sum())
        if free <= 0:
            return
        waiting: list[list[tuple[int, int, int]]] = [[] for _ in range(self.learners)]
        for s, learner in enumerate(self.next_learner()):
            waiting[learner].append((int(held[s]), int(self.granted[s]), s))
        for queue in waiting:
            heapq.heapify(queue)
        learners = [(int(h), j) for j, h in enumerate(self.held_by_learner())]
        heapq.heapify(learners)
        while free > 0:
            h_learner, learner = heapq.heappop(learners)
            if not waiting[learner]:  # no sampler's next group goes there now; it may later
                heapq.heappush(learners, (h_learner + 1, learner))
                continue
            h, g, s = heapq.heappop(waiting[learner])
            self.granted[s] += 1
            self.granted_to_learner[learner] += 1
            heapq.heappush(waiting[(learner + 1) % self.learners], (h + 1, g + 1, s))
            heapq.heappush(learners, (h_learner + 1, learner))
            free -= 1


def flow_budget(samplers: int, groups_per_update: int, learners: int, ahead: int) -> int:
    """Groups that may be untrained at once: the window, the straggler slack, a group per extra learner."""
    window = ahead * groups_per_update
    return window + straggler_slack(window, groups_per_update, samplers) + learners - 1


def straggler_slack(window: int, groups_per_update: int, samplers: int) -> int:
    """The fewest extra groups x for which the others still hold an update's worth whatever one
    sampler holds: it holds at most floor((window + x) / samplers) + 1 (0 with a single sampler)."""
    if samplers == 1:
        return 0
    slack = 0
    while window + slack - ((window + slack) // samplers + 1) < groups_per_update:
        slack += 1
    return slack
