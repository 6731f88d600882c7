"""The job scripts under a scheduler: jobs/slurm.sh under a real one-machine SLURM (started here
by jobs/local_slurm.sh; `make test-slurm` installs it), and jobs/pbs.sh on a node file, as PBS
would hand it. A job that reaches its limit stops cleanly, and re-submitting it resumes."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from dvla_hpc.bench.job_faults import read_outputs

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.mpi, pytest.mark.slow]


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = [tool for tool in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        why = f"needs SLURM and munge, as root ({', '.join(missing) or 'not root'}): `make test-slurm`"
        if os.environ.get("DVLA_REQUIRE_SLURM"):  # make test-slurm: a skip would pass unseen
            pytest.fail(why)
        pytest.skip(why)
    state = tmp_path_factory.mktemp("slurm")
    started = subprocess.run(["jobs/local_slurm.sh", "start", str(state), "8"], cwd=REPO,
                             capture_output=True, text=True, timeout=90)
    assert started.returncode == 0, started.stderr + "".join(p.read_text() for p in state.glob("*.log"))
    yield {**os.environ, "SLURM_CONF": str(state / "slurm.conf")}
    subprocess.run(["jobs/local_slurm.sh", "stop", str(state)], cwd=REPO, timeout=60)


def sbatch_and_wait(env: dict, options: list[str], args: list[str], log: Path, timeout_s: float) -> str:
    """Submit jobs/slurm.sh, wait until SLURM no longer lists the job, return its output."""
    submitted = subprocess.run(["sbatch", "--parsable", f"--output={log}", *options, "jobs/slurm.sh", *args],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]
    deadline = time.monotonic() + timeout_s
    def listed() -> bool:
        return bool(subprocess.run(["squeue", "-h", "-j", job_id], env=env, capture_output=True,
                                   text=True).stdout.strip())

    while listed():
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job_id], env=env)
            pytest.fail(f"SLURM job {job_id} still listed after {timeout_s} s:\n{log.read_text()[-3000:]}")
        time.sleep(2)
    return log.read_text()


def test_a_slurm_job_stopped_at_its_time_limit_resumes_when_submitted_again(slurm, tmp_path):
    run_dir = tmp_path / "run"
    args = ["configs/quickstart.yaml", str(run_dir)]
    first = sbatch_and_wait(slurm, ["--ntasks=4", "--time=1"],
                            [*args, "run.total_env_steps=10000000", "run.checkpoint_every_s=10"],
                            tmp_path / "first.out", timeout_s=240)
    assert "DUE TO TIME LIMIT" in first, first[-3000:]
    assert (run_dir / "summary.json").exists(), first[-3000:]
    stopped = summary(run_dir)
    assert stopped["stopped_by"] == "SIGTERM" and stopped["world_size"] == 4, first[-3000:]
    assert read_outputs(run_dir).checkpoint_version == stopped["policy_version"]  # its last act: a checkpoint

    target = stopped["env_steps"] + 1500
    second = sbatch_and_wait(slurm, ["--ntasks=4", "--time=3"], [*args, f"run.total_env_steps={target}"],
                             tmp_path / "second.out", timeout_s=240)
    resumed = summary(run_dir)
    assert f"policy version {stopped['policy_version']}, {stopped['env_steps']:,} env steps" in second
    assert resumed["stopped_by"] == "env steps", second[-3000:]
    assert resumed["env_steps"] >= target and resumed["policy_version"] > stopped["policy_version"]
    assert resumed["episodes"] > stopped["episodes"] and read_outputs(run_dir).episodes > 0


def test_the_pbs_script_runs_one_rank_per_node_file_line_and_resumes(tmp_path):
    run_dir, node_file = tmp_path / "run", tmp_path / "nodes"
    node_file.write_text(f"{socket.gethostname()}\n" * 3)
    env = {**os.environ, "PBS_NODEFILE": str(node_file), "PBS_O_WORKDIR": str(REPO), "RUN_DIR": str(run_dir)}
    outputs = []
    for target in (800, 1600):
        done = subprocess.run(["bash", "jobs/pbs.sh"], cwd=REPO, capture_output=True, text=True, timeout=240,
                              env={**env, "ARGS": f"run.total_env_steps={target}"})
        assert done.returncode == 0, done.stderr[-3000:]
        assert summary(run_dir)["world_size"] == 3 and summary(run_dir)["env_steps"] >= target
        outputs.append((done.stdout, summary(run_dir)))
    first_summary = outputs[0][1]
    assert "resumed from" not in outputs[0][0]
    assert f"policy version {first_summary['policy_version']}," in outputs[1][0]
    assert read_outputs(run_dir).checkpoint_env_steps >= 1600


def test_the_pbs_script_refuses_an_empty_node_file(tmp_path):
    (tmp_path / "nodes").write_text("")
    done = subprocess.run(["bash", "jobs/pbs.sh"], cwd=REPO, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PBS_NODEFILE": str(tmp_path / "nodes")})
    assert done.returncode == 2 and "names no host" in done.stderr
