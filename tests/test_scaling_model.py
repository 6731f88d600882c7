"""The SimGrid scaling model (analysis/scaling_model): the tree, sync against async, agreement with
the analytic lane model, and the pieces that need no SimGrid. Each simulation runs in a fresh
process (SimGrid allows one engine per process)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from analysis.scaling_model.actors import backoff_overshoot
from analysis.scaling_model.scenario import flow_budget
from analysis.scaling_model.simgrid_import import load_simgrid

try:
    load_simgrid()
    SIMGRID = None
except ImportError as err:
    SIMGRID = str(err)
needs_simgrid = pytest.mark.skipif(SIMGRID is not None, reason=f"{SIMGRID}")


def test_a_poller_wakes_on_its_doubling_backoff_schedule():
    assert backoff_overshoot(0.0, 0.02) == 0.0
    assert backoff_overshoot(75e-6, 0.02) == pytest.approx(75e-6)  # wakes at 50, 150 us
    assert backoff_overshoot(1.0, 0.02) < 0.02  # past the ceiling: every 20 ms
    assert backoff_overshoot(1.0, 0.002) < 0.002


def test_the_former_flow_budgets_spares_grew_with_learners_times_samplers():
    assert flow_budget(8, 2, 1, 60) == 2 * 8  # lanes/flow_credit.py: the window (no slack needed here)
    assert flow_budget(3136, 2, 64, 392) == 2 * 3136 + 63
    assert flow_budget(3136, 2, 64, 392, former=True) == 2 * 3136 + 63 * 392


@pytest.fixture(scope="module")
def cal():
    from analysis.scaling_model.machine import load_calibration
    return load_calibration()


def run(*jobs):
    from analysis.scaling_model.simulate import run_all
    return run_all(list(jobs), workers=2)


@needs_simgrid
def test_the_tree_broadcast_grows_with_the_log_of_ranks_and_with_model_size(cal):
    from analysis.scaling_model.broadcast import broadcast_s, with_fanout
    from analysis.scaling_model.gpu import gpu_scenario

    def tree(ranks, params):
        return (broadcast_s, with_fanout(gpu_scenario(cal, ranks, params, 100, "async"), 8, 2))

    t64, t512, t4096, big = run(tree(64, 1e9), tree(512, 1e9), tree(4096, 1e9), tree(512, 7e9))
    assert t64 < t512 < t4096
    # each 8x in ranks adds about three tree levels: increments alike, far from 8x growth
    assert t4096 - t512 < 2 * (t512 - t64)
    assert t4096 < 2 * t512
    assert 5 < big / t512 < 7.5  # bandwidth-bound: nearly proportional to the bytes


@needs_simgrid
def test_sync_is_no_faster_than_async_and_a_learner_bound_job_runs_at_the_learners_rate(cal):
    from analysis.scaling_model.gpu import gpu_scenario
    from analysis.scaling_model.simulate import simulate

    sync, asyn = run(*((simulate, gpu_scenario(cal, 8, 1e9, 100, mode)) for mode in ("sync", "async")))
    assert sync.steady_steps_per_s <= asyn.steady_steps_per_s
    learn = gpu_scenario(cal, 8, 1e9, 100, "async").lanes.learn
    assert asyn.bottleneck == "learn"
    assert asyn.steady_steps_per_s == pytest.approx(1 / learn, rel=0.05)  # analytic: 1 / max(c_x)


@needs_simgrid
def test_at_512_ranks_async_matches_the_analytic_model_with_the_allreduce(cal):
    from analysis.scaling_model.gpu import GpuCluster, gpu_scenario
    from analysis.scaling_model.simulate import simulate

    sc = gpu_scenario(cal, 512, 1e9, 100, "async", GpuCluster(update_rounds=3))
    [res] = run((simulate, sc))
    learners = len(sc.placement.learners)
    update = sc.lanes.learn * sc.workload.groups_per_update * sc.workload.group_size \
        * sc.workload.max_episode_steps / learners
    analytic = learners / sc.lanes.learn * update / (update + res.allreduce_s)
    assert res.steady_steps_per_s == pytest.approx(analytic, rel=0.05)


@needs_simgrid
def test_coarse_messages_change_the_prediction_little(cal):
    from analysis.scaling_model.gpu import gpu_scenario
    from analysis.scaling_model.simulate import simulate

    sc = gpu_scenario(cal, 8, 7e9, 100, "async")
    fine, coarse = run((simulate, replace(sc, steps_per_message=1)), (simulate, sc))
    assert coarse.steady_steps_per_s == pytest.approx(fine.steady_steps_per_s, rel=0.05)


@needs_simgrid
def test_more_ranks_on_two_cores_are_not_faster(cal):
    from analysis.scaling_model.machine import machine_scenario
    from analysis.scaling_model.placement import place
    from analysis.scaling_model.simulate import simulate

    two = {**cal, "cores": 2}
    few, many = run(*((simulate, machine_scenario(two, place(n, 1, 1), 1600)) for n in (4, 32)))
    assert many.produced_steps_per_s < few.produced_steps_per_s * 1.05
