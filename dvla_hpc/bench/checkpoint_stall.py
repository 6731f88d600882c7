"""Benchmark: does writing a checkpoint stall inference? The quickstart job runs with a checkpoint
after every update, traced: each rank notes when its infer lane began and ended acting on an
observation slab and when its learn lane wrote a checkpoint (time.perf_counter, CLOCK_MONOTONIC on
Linux, so the ranks of one machine share the clock). The infer lanes' serving rate and time per
slab inside the checkpoint windows are set against those outside them, in one process (where the
learn lane's thread writes beside the infer lane's) and under mpiexec (where the learner root
writes, in its own process). Flow control is off and updates are short, so that the samplers keep
the infer lanes busy while checkpoints are written (with flow control the quickstart's samplers
wait for each update, and an idle lane cannot show a stall).

A checkpoint follows each update's publish, when the infer lanes swap in the new weights, so each
job runs twice: once writing its checkpoints, and once (the placebo) with the learn lane only
sleeping as long at the same moments. What the placebo shows during its windows is the swap's and
the schedule's; what the real run shows beyond it is the checkpoint's.

    python -m dvla_hpc.bench checkpoint_stall [--out bench_out/checkpoint_stall] [--seconds 90]
                                              [--presets tiny,small] [--ranks 3]

A ratio near 1 means no stall. Sim ranks of a traced job import torch (the tracer patches the lane
classes before the job starts), so this bench says nothing about their memory."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dvla_hpc.bench.runs import BENCH_ENV, mpiexec, write_results

SETTINGS = ["run.progress_bar=false", "run.checkpoint_every_updates=1", "run.checkpoint_every_s=0",
            "run.total_env_steps=100000000", "run.checkpoint_keep=2", "pipeline.flow_versions_ahead=0",
            "learn.groups_per_update=2", "learn.epochs=1"]


def traced_main(trace_dir: Path, argv: list[str], placebo_ms: float | None = None) -> int:
    """`dvla_hpc.main` with its infer lanes' serving times and learn lanes' checkpoint windows
    written to trace_dir/rank<R>.json at the end; with placebo_ms, a periodic checkpoint is a sleep
    that long instead."""
    from dvla_hpc import main as entry
    from dvla_hpc.lanes.infer import InferLane
    from dvla_hpc.lanes.learn import LearnLane

    served: list[tuple[float, float]] = []
    windows: list[tuple[float, float]] = []
    act_on, write = InferLane.act_on, LearnLane.write_checkpoint

    def timed_act_on(lane: InferLane, *call) -> bool:  # one policy call, whatever its slabs
        t0 = time.perf_counter()
        ok = act_on(lane, *call)
        served.append((t0, time.perf_counter()))
        return ok

    def timed_write(lane: LearnLane) -> None:
        t0 = time.perf_counter()
        if placebo_ms is None:
            write(lane)
        else:
            time.sleep(placebo_ms / 1000)
        windows.append((t0, time.perf_counter()))

    InferLane.act_on, LearnLane.write_checkpoint = timed_act_on, timed_write
    code = entry.main(argv)
    rank = int(os.environ.get("PMI_RANK", "0"))
    (trace_dir / f"rank{rank}.json").write_text(json.dumps({"served": served, "checkpoints": windows}))
    return code


def stall_figures(served: list[tuple[float, float]], windows: list[tuple[float, float]]) -> dict:
    """Over the span in which the infer lanes served: their serving rate inside the checkpoint
    windows against outside them, the mean time a serving took when it overlapped a window against
    otherwise, and the longest gap between two servings that overlaps a window against the longest
    that does not."""
    if len(served) < 2 or not windows:
        raise ValueError(f"nothing to compare: {len(served)} servings, {len(windows)} checkpoints")
    began, ended = np.asarray(served).T
    times = np.sort(ended)  # when each serving ended (the lanes of several infer ranks interleave)
    start, end = times[0], times[-1]
    spans = [(max(a, start), min(b, end)) for a, b in sorted(windows) if b > start and a < end]
    inside_s = sum(b - a for a, b in spans)
    inside = sum(int(np.searchsorted(times, b) - np.searchsorted(times, a)) for a, b in spans)
    outside_s = (end - start) - inside_s
    rate_in = inside / max(inside_s, 1e-9)
    rate_out = (len(times) - inside) / max(outside_s, 1e-9)
    gaps = np.diff(times)
    overlaps = np.zeros(len(gaps), dtype=bool)
    for a, b in spans:
        overlaps |= (times[:-1] < b) & (times[1:] > a)
    took = ended - began
    during = np.zeros(len(times), dtype=bool)
    for a, b in spans:
        during |= (began < b) & (ended > a)
    durations = [b - a for a, b in windows]
    return {"checkpoints": len(windows), "checkpoint_ms_mean": round(1000 * float(np.mean(durations)), 1),
            "checkpoint_ms_max": round(1000 * max(durations), 1),
            "share_of_time_checkpointing": round(inside_s / (end - start), 4),
            "servings": len(times), "servings_during_checkpoints": inside,
            "served_per_s_during": round(rate_in, 2), "served_per_s_otherwise": round(rate_out, 2),
            "rate_during_over_otherwise": round(rate_in / max(rate_out, 1e-9), 3),
            "serving_ms_during": round(1000 * float(took[during].mean()), 2) if during.any() else None,
            "serving_ms_otherwise": round(1000 * float(took[~during].mean()), 2),
            "longest_gap_ms_overlapping_a_checkpoint": round(1000 * float(gaps[overlaps].max(initial=0)), 1),
            "longest_gap_ms_otherwise": round(1000 * float(gaps[~overlaps].max(initial=0)), 1)}


def traced_run(out: Path, ranks: int, preset: str, seconds: float, placebo_ms: float | None = None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    trace_dir = out / "trace"
    trace_dir.mkdir(parents=True)
    prefix = [] if ranks == 1 else [mpiexec(), "-n", str(ranks)]
    placebo = [] if placebo_ms is None else ["--placebo-ms", f"{placebo_ms:g}"]
    cmd = [*prefix, sys.executable, "-m", "dvla_hpc.bench.checkpoint_stall", "--trace", str(trace_dir), *placebo,
           "--out", str(out / "run"), *SETTINGS, f"model.preset={preset}", f"run.wall_clock_limit_s={seconds:g}"]
    print(f"[{preset}, {ranks} rank(s){', placebo' if placebo else ''}] {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 600,
                          env={**os.environ, **BENCH_ENV})
    if proc.returncode != 0:
        raise SystemExit(f"the traced job failed with exit code {proc.returncode}:\n{proc.stderr[-4000:]}")
    served, windows = [], []
    for path in sorted(trace_dir.glob("rank*.json")):
        trace = json.loads(path.read_text())
        served += [tuple(s) for s in trace["served"]]
        windows += [tuple(w) for w in trace["checkpoints"]]
    summary = json.loads((out / "run" / "summary.json").read_text())
    size = max((p.stat().st_size for p in (out / "run" / "checkpoints").glob("ckpt_*.pt")), default=0)
    return {"preset": preset, "ranks": ranks, "placebo": placebo_ms is not None, "checkpoint_mib": round(size / 2**20, 1),
            "env_steps_per_second": summary["env_steps_per_second"], "updates": summary["updates"],
            **stall_figures(served, windows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_out/checkpoint_stall")
    parser.add_argument("--seconds", type=float, default=90, help="wall time of each traced job")
    parser.add_argument("--presets", default="tiny,small", help="comma-separated model presets")
    parser.add_argument("--ranks", type=int, default=3, help="ranks of the MPI job (one process also runs)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    results = []
    for preset in args.presets.split(","):
        for ranks in (1, args.ranks):
            real = traced_run(out / f"{preset}_{ranks}", ranks, preset, args.seconds)
            placebo = traced_run(out / f"{preset}_{ranks}_placebo", ranks, preset, args.seconds,
                                 placebo_ms=real["checkpoint_ms_mean"])
            results.append({"real": real, "placebo": placebo,
                            "rate_during_real_over_placebo": round(real["served_per_s_during"]
                                                                   / max(placebo["served_per_s_during"], 1e-9), 3)})
            for label, found in (("checkpoints", real), ("placebo", placebo)):
                print(f"  {label}: {found['checkpoints']} of {found['checkpoint_ms_mean']} ms "
                      f"({found['share_of_time_checkpointing']:.1%} of the time, {found['checkpoint_mib']} MiB); "
                      f"infer served {found['served_per_s_during']}/s during them, "
                      f"{found['served_per_s_otherwise']}/s otherwise (ratio {found['rate_during_over_otherwise']}), "
                      f"{found['serving_ms_during']} ms a slab during them, {found['serving_ms_otherwise']} ms "
                      f"otherwise", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    write_results(out / "results.json", {"command": ["python", "-m", "dvla_hpc.bench", "checkpoint_stall",
                                                     *(argv or [])], "runs": results})
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--trace"]:
        rest = sys.argv[3:]
        placebo = float(rest[1]) if rest[:1] == ["--placebo-ms"] else None
        sys.exit(traced_main(Path(sys.argv[2]), rest[2:] if placebo is not None else rest, placebo))
    sys.exit(main(sys.argv[1:]))
