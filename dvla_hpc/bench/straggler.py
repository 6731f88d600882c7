"""A straggler: one sim rank runs a fraction of the time (SIGSTOP/SIGCONT in short cycles, as a
node shared with another job would), and the others must not slow down. Two runs of the same job
for the same wall time, one with the straggler and one without, counted per sampler in env steps
trained (`summary.json`'s `env_steps_trained_by_sampler`). Env steps, not groups: a run that
learns faster ends its episodes sooner, so its samplers finish more groups for the same work."""
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
    steps = {int(rank): n for rank, n in summary["env_steps_trained_by_sampler"].items()}
    kept = ("updates", "env_steps_per_second", "policy_lag_mean", "samples_dropped_stale", "wall_seconds")
    return {"slow_rank": slow_rank if running_share is not None else None, "groups": groups, "steps": steps,
            **{key: summary[key] for key in kept}}


def straggler_compare(out: Path, ranks: int, seconds: float, running_share: float,
                      earlier: dict | None = None) -> dict:
    """The same job with and without one straggling sim rank. With `earlier` (a comparison from
    before), its runs are pooled with these two: a 2-core machine's pace drifts by a tenth
    between runs."""
    alone = [*(earlier or {}).get("steady", []), timed_run(out / "steady", ranks, seconds, None)]
    slowed = [*(earlier or {}).get("straggler", []), timed_run(out / "straggler", ranks, seconds, running_share)]
    return {"ranks": ranks, "seconds": seconds, "running_share": running_share, **compare_runs(alone, slowed)}


def compare_runs(alone: list[dict], slowed: list[dict]) -> dict:
    """Env steps trained per second from each sampler, pooled over each side's runs: what the
    others kept of their steady pace, and what the learners trained against what they could."""
    slow = slowed[-1]["slow_rank"]
    everyone = list(alone[0]["steps"])
    others = [rank for rank in everyone if rank != slow]

    def rate(runs: list[dict], ranks: list[int]) -> float:
        return sum(run["steps"][r] for run in runs for r in ranks) / sum(run["wall_seconds"] for run in runs)

    def both(ranks: list[int]) -> list[float]:
        return [round(rate(alone, ranks), 1), round(rate(slowed, ranks), 1)]

    others_kept = rate(slowed, others) / max(rate(alone, others), 1e-9)
    # what the learners could train on if the others kept their pace: theirs plus the straggler's
    could = (rate(alone, others) + rate(slowed, [slow])) / max(rate(alone, everyone), 1e-9)
    return {"pairs": len(alone), "slow_rank": slow, "steady": alone, "straggler": slowed,
            "others_steps_per_s": both(others), "straggler_steps_per_s": both([slow]),
            "trained_steps_per_s": both(everyone),
            "updates_per_s": [round(sum(r["updates"] for r in runs) / sum(r["wall_seconds"] for r in runs), 3)
                              for runs in (alone, slowed)],
            "others_kept": round(others_kept, 3), "survived": others_kept >= 0.9,
            "learner_kept": round(rate(slowed, everyone) / max(rate(alone, everyone), 1e-9), 3),
            "learner_could_keep": round(could, 3)}


def print_comparison(found: dict) -> None:
    print(f"straggler: sim rank {found['slow_rank']} runs {found['running_share']:.0%} of the time; "
          f"{found['ranks']} ranks, {found['pairs']} pair(s) of runs of {found['seconds']:.0f} s")
    for label, key in (("other samplers, steps/s", "others_steps_per_s"),
                       ("the straggler, steps/s", "straggler_steps_per_s"),
                       ("learners, steps/s", "trained_steps_per_s"), ("updates/s", "updates_per_s")):
        steady, slowed = found[key]
        print(f"  {label:<26} steady {steady:>8.2f}   with straggler {slowed:>8.2f}")
    print(f"  the others kept {found['others_kept']:.0%} of their pace; the learners trained "
          f"{found['learner_kept']:.0%} of their env steps, where the others' steady pace and the "
          f"straggler's slowed one allow {found['learner_could_keep']:.0%}")
