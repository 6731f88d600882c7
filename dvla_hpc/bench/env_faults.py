"""Env faults injected into one run per kind (`env.name=debug_faulty`): a share of the episodes
crash their worker, hang it, stall it, raise, return NaN proprio or a misshapen image. The run
must go on, lose only the faulted episodes (failed, never trained), and record none corrupted.
Which episodes fault follows from their seeds, which the trajectories record: a stalled episode
is kept (so the stalls are counted there), and an episode of any other kind of fault never is."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from dvla_hpc.bench.runs import BENCH_ENV
from dvla_hpc.envs.faulty import seed_faults
from dvla_hpc.output.trajectory_reader import iter_episodes

KINDS = ("crash", "hang", "slow", "raise", "nan", "shape")
FAULT_STEP = 2
SETTINGS = ["env.envs_per_sampler=4", "env.workers_per_sampler=2", "env.step_timeout_s=2.0",
            "learn.group_size=2", "learn.groups_per_update=2", "output.record_every=1",
            "run.progress_bar=false", f"env.fault_step={FAULT_STEP}", "run.checkpoint_every_s=0"]


def env_fault_run(out: Path, kind: str, rate: float, env_steps: int, timeout_s: float = 1200) -> dict:
    """One run with `rate` of its episodes faulting `kind` at their second step; what it lost and
    whether every recorded episode is whole (finite, the spec's shapes, one done at the end)."""
    shutil.rmtree(out, ignore_errors=True)  # a run directory that exists would be continued
    cmd = [sys.executable, "-m", "dvla_hpc.main", "--out", str(out), *SETTINGS, "env.name=debug_faulty",
           f"env.fault={kind}", f"env.fault_rate={rate}", f"run.total_env_steps={env_steps}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, **BENCH_ENV})
    result = {"kind": kind, "exit_code": done.returncode}
    if done.returncode != 0:
        return {**result, "survived": False, "error": done.stderr[-2000:]}
    summary = json.loads((out / "summary.json").read_text())
    corrupted = recorded = recorded_faulted = 0
    for episode in iter_episodes(out / "trajectories"):
        recorded += 1
        recorded_faulted += len(episode.actions) >= FAULT_STEP and seed_faults(episode.seed, rate)
        whole = (np.isfinite(episode.proprio).all() and episode.images.shape[2:] == (64, 64, 3)
                 and episode.dones[-1] and not episode.dones[:-1].any())
        corrupted += not whole
    return {**result, "env_steps": summary["env_steps"], "episodes": summary["episodes"],
            "failed_episodes": summary["failed_episodes"], "worker_restarts": summary["worker_restarts"],
            "recorded": recorded, "corrupted": corrupted, "success_rate_last": summary["success_rate_last"],
            "recorded_faulted": recorded_faulted,  # the stalls, for 'slow'; 0 for every other kind
            # a slow step loses nothing; every other kind loses its episodes
            "survived": corrupted == 0 and (summary["failed_episodes"] > 0) == (kind != "slow")
            and (recorded_faulted > 0) == (kind == "slow")}
