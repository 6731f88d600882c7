"""Faults done to a whole job from outside, as a cluster does them: a rank stopped (SIGSTOP: hung)
or killed (SIGKILL: node lost), the whole job killed at a random moment and resumed. Each driver
launches `python -m dvla_hpc.main`, injects the fault, and checks what a user would then need:
the job ended in time, every file it wrote reads, and the newest checkpoint resumes."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import h5py

from dvla_hpc.bench.runs import BENCH_ENV, mpiexec, rank_processes
from dvla_hpc.output.checkpoint import latest_checkpoint, load_checkpoint
from dvla_hpc.output.metrics_log import read_metrics
from dvla_hpc.output.trajectory_reader import iter_episodes, trajectory_files
from dvla_hpc.runtime.topology import plan_layout

SMALL = ["env.envs_per_sampler=4", "learn.group_size=2", "learn.groups_per_update=2",
         "output.episodes_per_shard=8", "run.progress_bar=false", "run.metrics_every_s=0.5",
         "run.checkpoint_every_updates=2", "run.checkpoint_every_s=0", "env.workers_per_sampler=1"]


@dataclass
class Job:
    out: Path
    ranks: int
    proc: subprocess.Popen

    def rank_pids(self) -> dict[int, int]:
        """World rank -> pid of each rank's Python process (its env workers are its children)."""
        if self.ranks == 1:
            return {0: self.proc.pid}
        return {rank: proc.pid for rank, proc in rank_processes(self.proc.pid).items()}

    def wait(self, timeout_s: float) -> float | None:
        """Seconds until the job ended, or None (then it is killed) if it outlived timeout_s."""
        began = time.monotonic()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        return time.monotonic() - began

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def output(self) -> str:
        return self.proc.stdout.read() if self.proc.stdout else ""


def launch(out: Path, ranks: int, *extra: str, resume: bool = False) -> Job:
    """The job in its own session (so the whole of it can be killed), output into one pipe read at
    the end; small jobs print a few KiB, far below a pipe's buffer."""
    prefix = [mpiexec(), "-n", str(ranks)] if ranks > 1 else []
    where = ["--resume", str(out)] if resume else ["--out", str(out)]
    cmd = [*prefix, sys.executable, "-m", "dvla_hpc.main", *where, *SMALL, *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_", "PMIX_"))}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**env, **BENCH_ENV}, start_new_session=True)
    return Job(out, ranks, proc)


def wait_for_checkpoint(job: Job, timeout_s: float = 180) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = latest_checkpoint(job.out / "checkpoints")
        if found is not None:
            return found
        if job.proc.poll() is not None:
            raise RuntimeError(f"the job ended (exit {job.proc.returncode}) before its first checkpoint:\n"
                               f"{job.output()[-3000:]}")
        time.sleep(0.2)
    job.kill()
    raise TimeoutError(f"no checkpoint under {job.out} within {timeout_s:.0f} s")


@dataclass
class Outputs:
    """What a run directory holds after a fault, all of it read back."""
    episodes: int
    trajectory_files: int
    metric_records: int
    checkpoint_version: int
    checkpoint_env_steps: int


def read_outputs(out: Path) -> Outputs:
    """Read every file the job wrote; any unreadable one raises, naming it."""
    files = trajectory_files(out / "trajectories")
    for path in files:
        with h5py.File(path, "r") as shard:
            for demo in shard["data"].values():
                demo["actions"][...]
    episodes = sum(1 for _ in iter_episodes(out / "trajectories"))
    records = read_metrics(out / "metrics.jsonl") if (out / "metrics.jsonl").exists() else []
    newest = latest_checkpoint(out / "checkpoints")
    if newest is None:
        raise RuntimeError(f"no checkpoint under {out}")
    counters = load_checkpoint(newest).counters
    return Outputs(episodes, len(files), len(records), int(counters["version"]), int(counters["env_steps"]))


def victim_rank(ranks: int, role: str) -> int:
    """The first rank that takes `role` in a one-node job of `ranks` ranks (the launcher's plan)."""
    plan = plan_layout(ranks, 1, 1, [0] * ranks, [0] * ranks)
    return plan.ranks(role)[0]


def signal_rank(out: Path, ranks: int, role: str, sig: signal.Signals, timeout_s: float,
                end_within_s: float) -> dict:
    """Start a job, wait for its first checkpoint, send `sig` to a rank of `role`; report how long
    the job took to end, what it said, and whether its files read."""
    job = launch(out, ranks, "run.total_env_steps=10000000", f"run.heartbeat_timeout_s={timeout_s:g}")
    wait_for_checkpoint(job)
    rank = victim_rank(ranks, role)
    os.kill(job.rank_pids()[rank], sig)
    ended_after = job.wait(end_within_s + 30)
    text = job.output()
    outputs = read_outputs(out)
    return {"role": role, "rank": rank, "signal": sig.name, "ended_after_s": ended_after,
            "exit_code": job.proc.returncode, "named": f"rank {rank} ({role})" in text,
            "message": next((line.strip() for line in text.splitlines() if "RankSilent" in line), ""),
            "episodes_readable": outputs.episodes, "checkpoint_version": outputs.checkpoint_version,
            "checkpoint_env_steps": outputs.checkpoint_env_steps}


def kill_and_resume(out: Path, ranks: int, kills: int, seed: int, final_steps: int = 600,
                    max_delay_s: float | None = None) -> list[dict]:
    """SIGKILL the whole job `kills` times at random moments (the first once a checkpoint exists,
    the others anywhere from start-up on), resuming each time with `--resume DIR` alone; the last
    resume runs `final_steps` env steps past its checkpoint and finishes. Each leg records what the
    files held after it (every one read back)."""
    rng = random.Random(seed)
    max_delay_s = max_delay_s or (8.0 if ranks == 1 else 16.0)  # an MPI job takes ~8 s to start here
    endless = "run.total_env_steps=100000000"
    legs = []
    for leg in range(kills + 1):
        if leg == 0:
            job = launch(out, ranks, endless)
            wait_for_checkpoint(job)
            time.sleep(rng.uniform(0, max_delay_s / 2))
        elif leg < kills:
            job = launch(out, ranks, endless, resume=True)
            time.sleep(rng.uniform(1.0, max_delay_s))
        else:
            target = legs[-1]["checkpoint_env_steps"] + final_steps
            job = launch(out, ranks, f"run.total_env_steps={target}", resume=True)
        if leg < kills:
            job.kill()
            ended = "killed"
        else:
            ended = "finished" if job.wait(600) is not None and job.proc.returncode == 0 else "failed"
        legs.append({"leg": leg, "ended": ended, "exit_code": job.proc.returncode, **vars(read_outputs(out))})
        if ended == "failed":
            legs[-1]["output"] = job.output()[-3000:]
    return legs
