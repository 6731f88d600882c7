"""Launching `python -m dvla_hpc.main` from a benchmark: one process or under mpiexec."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

BENCH_ENV = {"MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}


def mpiexec() -> str:
    local = Path(sys.executable).with_name("mpiexec")
    return str(local) if local.exists() else "mpiexec"


def rank_processes(launcher_pid: int) -> dict[int, psutil.Process]:
    """World rank -> the Python process of each rank of an mpiexec job (found by the PMI_RANK the
    launcher's proxy gave it; a rank's env workers are its children, not the proxy's)."""
    found = {}
    for child in psutil.Process(launcher_pid).children(recursive=True):
        try:
            if "dvla_hpc.main" in " ".join(child.cmdline()) and child.parent().name().startswith("hydra"):
                found[int(child.environ()["PMI_RANK"])] = child
        except (psutil.Error, KeyError, ValueError):
            continue
    return found


def run_main(label: str, prefix: list[str], args: list[str], run_dir: Path, timeout_s: float) -> dict:
    """Run one job into a fresh run_dir (a reused one would append to its metrics) and return its
    summary.json (with `command_seconds` added)."""
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [*prefix, sys.executable, "-m", "dvla_hpc.main", "--out", str(run_dir),
           "run.progress_bar=false", *args]
    print(f"[{label}] {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, timeout=timeout_s, capture_output=True, text=True,
                          env={**os.environ, **BENCH_ENV})
    if proc.returncode != 0:
        raise SystemExit(f"[{label}] failed with exit code {proc.returncode}:\n{proc.stderr[-4000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["command_seconds"] = round(time.perf_counter() - t0, 1)
    return summary


def write_results(path: Path, results: dict) -> None:
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")
