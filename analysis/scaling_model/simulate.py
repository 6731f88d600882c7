"""Run one scenario in SimGrid and report its throughput, weight-distribution time and lane use.

SimGrid allows one engine per process, so `run_all` runs each scenario in a fresh process."""
from __future__ import annotations

import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

from . import actors, platform
from .scenario import Scenario
from .simgrid_import import load_simgrid


@dataclass(frozen=True)
class Result:
    mode: str
    ranks: int
    steps_per_s: float  # env steps trained per simulated second, from the start (as `bench wide`)
    steady_steps_per_s: float  # from the first version to the end (the pipeline already full)
    admitted_steps_per_s: float  # env steps reaching the learners until the budget (`bench wide`'s count)
    produced_steps_per_s: float  # env steps stepped per simulated second (includes stale, dropped)
    simulated_s: float
    versions: int
    versions_skipped: int
    broadcast_s: float  # root starts a version -> the last holder has it (mean over versions)
    allreduce_s: float
    mean_lag: float
    dropped_fraction: float
    utilisation: dict  # busy fraction of each lane's ranks (or devices)
    bottleneck: str
    wall_s: float  # real seconds the simulation took

    def as_dict(self) -> dict:
        return asdict(self)


def simulate(sc: Scenario) -> Result:
    """In this process; its first SimGrid engine."""
    began = time.perf_counter()
    sg = load_simgrid()
    engine = platform.engine(sg)
    hosts = (platform.one_machine if sc.platform == "machine" else platform.fat_tree)(sg, sc)
    job = actors.Job(sc, hosts)
    p = sc.placement
    barrier = sg.Barrier(len(p.learners))
    root = p.learners[0]
    sg.Actor.create(f"learn{root}", job.host_of(root), actors.learner, sg, job, root, barrier)
    daemons = [sg.Actor.create(f"learn{r}", job.host_of(r), actors.learner, sg, job, r, barrier)
               for r in p.learners[1:]]
    daemons += [sg.Actor.create(f"sim{r}", job.host_of(r), actors.sampler, sg, job, r) for r in p.sims]
    daemons += [sg.Actor.create(f"infer{r}", job.host_of(r), actors.infer, sg, job, r) for r in p.infers]
    daemons += [sg.Actor.create(f"tree{r}", job.host_of(r), actors.tree_member, sg, job, r, links)
                for r, links in p.tree.items()]
    if sc.platform == "machine":  # many ranks share few cores: their waiting costs count
        share = sc.data_plane.idle_cpu_share
        daemons += [sg.Actor.create(f"idle{r}", job.host_of(r), actors.idle_load, sg, job, share)
                    for r in range(len(p.node_of))]
    for actor in daemons:
        actor.daemonize()
    engine.run()
    end = job.end_s or engine.clock
    return summarize(sc, job, end, time.perf_counter() - began)


def summarize(sc: Scenario, job: actors.Job, end: float, wall: float) -> Result:
    p = sc.placement
    devices = {"sample": len(p.sims), "infer": len(p.infers), "learn": len(p.learners),
               "allreduce": len(p.learners)}
    use = {lane: job.busy[lane] / (end * n) for lane, n in devices.items() if n}
    if sc.platform == "machine":  # lanes share the machine's cores: report the CPU they ask for
        use["cores"] = sum(job.busy.values()) / (end * sc.cores_per_node)
    per_version: dict[int, float] = {}
    for version, seconds in job.broadcast_s:
        per_version[version] = max(per_version.get(version, 0.0), seconds)
    produced = job.produced_steps
    first_s, first_steps = job.versions_at[0] if len(job.versions_at) > 1 else (0.0, 0)
    return Result(mode=sc.mode, ranks=len(p.node_of), steps_per_s=job.trained_steps / end,
                  steady_steps_per_s=(job.trained_steps - first_steps) / (end - first_s),
                  admitted_steps_per_s=job.admitted_at[1] / job.admitted_at[0] if job.admitted_at else 0.0,
                  produced_steps_per_s=produced / end, simulated_s=end, versions=job.version,
                  versions_skipped=job.versions_skipped,
                  broadcast_s=statistics.mean(per_version.values()) if per_version else 0.0,
                  allreduce_s=actors.ring_allreduce_s(sc),
                  mean_lag=statistics.mean(job.lags) if job.lags else 0.0,
                  dropped_fraction=job.dropped_steps / max(job.dropped_steps + job.trained_steps, 1),
                  utilisation={k: round(v, 4) for k, v in use.items()},
                  bottleneck=max((k for k in use if k != "cores"), key=use.get), wall_s=wall)


def run_all(jobs: list[tuple], workers: int = 2) -> list:
    """(function, scenario) pairs, each in a fresh process; results in order."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, max_tasks_per_child=1) as pool:
        futures = [pool.submit(fn, sc) for fn, sc in jobs]
        return [f.result() for f in futures]
