"""A straggler: one sim rank runs a fraction of the time (SIGSTOP/SIGCONT in short cycles, as a
node shared with another job would), and the others must not slow down. Two runs of the same job
for the same wall time, one with the straggler and one without, counted per sampler from
`summary.json`'s `groups_trained_by_sampler`."""
from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from pathlib import Path

import psutil

from dvla_hpc.bench.job_faults import launch, victim_rank

CYCLE_S = 1.0


def throttle(pid: int, running_share: float, until: threading.Event) -> None:
    """Let the process (and its env workers) run `running_share` of every CYCLE_S, until told."""
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    while not until.is_set():
        for sig, share in ((signal.SIGSTOP, 1 - running_share), (signal.SIGCONT, running_share)):
            for proc in procs:
                try:
                    proc.send_signal(sig)
                except psutil.Error:
                    pass
            time.sleep(CYCLE_S * share)
    for proc in procs:
        try:
            proc.send_signal(signal.SIGCONT)
        except psutil.Error:
            pass


def timed_run(out: Path, ranks: int, seconds: float, running_share: float | None) -> dict:
    """One job for `seconds` of training; with a running_share, its first sim rank straggles."""
    shutil.rmtree(out, ignore_errors=True)
    job = launch(out, ranks, "run.total_env_steps=100000000", f"run.wall_clock_limit_s={seconds:g}",
                 "run.checkpoint_every_updates=0")
    done = threading.Event()
    slow_rank = victim_rank(ranks, "sim")
    thread = None
    if running_share is not None:
        deadline = time.monotonic() + 120
        while len(job.rank_pids()) < ranks and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.0)  # its env workers started
        thread = threading.Thread(target=throttle, args=(job.rank_pids()[slow_rank], running_share, done))
        thread.start()
    try:
        ended = job.wait(seconds + 180)
    finally:
        done.set()
        if thread is not None:
            thread.join()
    if ended is None or job.proc.returncode != 0:
        raise RuntimeError(f"the job did not end cleanly (exit {job.proc.returncode}):\n"
                           f"{job.output()[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    groups = {int(rank): n for rank, n in summary["groups_trained_by_sampler"].items()}
    kept = ("updates", "env_steps_per_second", "policy_lag_mean", "samples_dropped_stale", "wall_seconds")
    return {"slow_rank": slow_rank if running_share is not None else None, "groups": groups,
            **{key: summary[key] for key in kept}}


def straggler_compare(out: Path, ranks: int, seconds: float, running_share: float) -> dict:
    """The same job with and without one straggling sim rank: groups per sampler, and what the
    others (and the learner) did in each."""
    alone = timed_run(out / "steady", ranks, seconds, None)
    slowed = timed_run(out / "straggler", ranks, seconds, running_share)
    slow = slowed["slow_rank"]
    others = [rank for rank in alone["groups"] if rank != slow]

    def rate(run: dict, ranks_: list[int]) -> float:
        return sum(run["groups"][r] for r in ranks_) / run["wall_seconds"]

    others_kept = rate(slowed, others) / max(rate(alone, others), 1e-9)
    # what the learners could train on if the others kept their pace: theirs plus the straggler's
    could = (rate(alone, others) + rate(slowed, [slow])) / max(rate(alone, list(alone["groups"])), 1e-9)
    return {"ranks": ranks, "seconds": seconds, "running_share": running_share, "steady": alone,
            "straggler": slowed,
            "others_groups_per_s": [round(rate(alone, others), 3), round(rate(slowed, others), 3)],
            "straggler_groups_per_s": [round(rate(alone, [slow]), 3), round(rate(slowed, [slow]), 3)],
            "updates_per_s": [round(r["updates"] / r["wall_seconds"], 3) for r in (alone, slowed)],
            "others_kept": round(others_kept, 3), "survived": others_kept >= 0.9,
            "learner_kept": round((slowed["updates"] / slowed["wall_seconds"])
                                  / max(alone["updates"] / alone["wall_seconds"], 1e-9), 3),
            "learner_could_keep": round(could, 3)}


def print_comparison(found: dict) -> None:
    print(f"straggler: sim rank {found['straggler']['slow_rank']} runs {found['running_share']:.0%} of the "
          f"time; {found['ranks']} ranks, {found['seconds']:.0f} s each")
    for label, key in (("other samplers, groups/s", "others_groups_per_s"),
                       ("the straggler, groups/s", "straggler_groups_per_s"), ("updates/s", "updates_per_s")):
        steady, slowed = found[key]
        print(f"  {label:<26} steady {steady:>7.3f}   with straggler {slowed:>7.3f}")
    print(f"  the others kept {found['others_kept']:.0%} of their pace; the learner "
          f"{found['learner_kept']:.0%} of its updates, where the others' steady pace and the "
          f"straggler's slowed one allow {found['learner_could_keep']:.0%}")
