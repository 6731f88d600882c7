"""Benchmark: each lane's cost alone, then sync and async runs of one config, against the model.

    python -m dvla_hpc.bench throughput --config configs/throughput.yaml [--ranks 4] [--rounds 3]
        [key=value ...]

Steady-state rates come from the runs' metrics.jsonl (update records after the warm-up share of
the run), so process start-up and env spawning do not count against either mode."""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict
from pathlib import Path

from dvla_hpc.bench.lane_costs import cold_infer_cost, measure, model_bounds
from dvla_hpc.bench.reacher import median_ratios
from dvla_hpc.bench.runs import mpiexec, run_main, write_results
from dvla_hpc.config.loader import load_config
from dvla_hpc.config.schema import Config
from dvla_hpc.output.metrics_log import read_metrics
from dvla_hpc.runtime.reports import LANES


def steady_rates(metrics_path: Path, warmup_share: float) -> dict:
    updates = [r for r in read_metrics(metrics_path) if r.get("kind") == "update"]
    if len(updates) < 3:
        raise SystemExit(f"{metrics_path}: only {len(updates)} updates; run longer (run.total_env_steps)")
    t_end = updates[-1]["t"]
    first = next(r for r in updates if r["t"] >= warmup_share * t_end)
    if first is updates[-1]:
        first = updates[-2]
    window = [r for r in updates if r["t"] > first["t"]]
    dt = t_end - first["t"]
    return {"env_steps_per_s": (updates[-1]["env_steps"] - first["env_steps"]) / dt,
            "trained_samples_per_s": sum(r["samples"] for r in window) / dt,
            "window_start_t": first["t"], "window_s": dt, "updates_in_window": len(window),
            "lag_mean": sum(r["lag_mean"] * r["samples"] for r in window) / max(1, sum(r["samples"] for r in window))}


def steady_load(metrics_path: Path, window_start_t: float, env_steps_per_s: float) -> dict:
    """Over the "lanes" records whose intervals lie in the steady window: the share of the host's
    cores that were busy, and the job's own CPU (every rank with its env workers) per env step.
    Empty when the run logged fewer than two such records."""
    lanes = [r for r in read_metrics(metrics_path) if r.get("kind") == "lanes" and "host_cpu_busy_percent" in r]
    spans = [(cur, cur["t"] - prev["t"]) for prev, cur in zip(lanes, lanes[1:]) if prev["t"] >= window_start_t]
    if len(spans) < 2:
        return {}
    seconds = sum(dt for _, dt in spans)
    job_cores = sum(dt * sum(rank["cpu_percent"] for rank in r["ranks"].values()) for r, dt in spans) / 100 / seconds
    return {"host_busy_share": sum(dt * r["host_cpu_busy_percent"] for r, dt in spans) / 100 / seconds,
            "job_cores": job_cores, "job_cpu_ms_per_step": 1e3 * job_cores / env_steps_per_s}


def lane_cpu_seconds(report: dict) -> float:
    """A lane's CPU seconds in a report: its thread's, and the sample lane's env workers'."""
    return report.get("cpu_seconds", 0.0) + report.get("counters", report).get("worker_cpu_ms", 0) / 1e3


def lane_cpu_per_step(metrics_path: Path, summary: dict, window_start_t: float) -> dict:
    """CPU-ms per env step of each lane: over the steady window for the lanes whose reports the
    "lanes" records carry (every lane in one process; the learner rank's under MPI), over the
    whole run from the summary for the rest (marked in `whole_run`)."""
    records = [r for r in read_metrics(metrics_path) if r.get("kind") == "lanes" and r["t"] >= window_start_t]
    out: dict = {"steady": {}, "whole_run": {}}
    if len(records) >= 2 and records[-1]["env_steps"] > records[0]["env_steps"]:
        first, last = records[0], records[-1]
        steps = last["env_steps"] - first["env_steps"]
        for name in LANES:
            if name in first and name in last:
                cpu = lane_cpu_seconds(last[name]) - lane_cpu_seconds(first[name])
                out["steady"][name] = round(1e3 * cpu / steps, 4)
    for name, merged in summary["lanes"].items():
        if name not in out["steady"] and summary.get("env_steps"):
            out["whole_run"][name] = round(1e3 * lane_cpu_seconds(merged) / summary["env_steps"], 4)
    return out


def role_cpu_per_step(metrics_path: Path, window_start_t: float, env_steps_per_s: float) -> dict:
    """Per role, over the steady window: CPU-ms per env step of its ranks' processes with their env
    workers ("process"), of their lanes ("lanes"), and of the rest ("outside_lanes": data pump,
    control plane, main thread). From the running totals every rank's entry in the "lanes" records
    holds (a heartbeat's, on ranks other than the learner root): each rank's CPU rate between its
    first and last totals in the window, over the run's steady env steps a second."""
    first: dict[str, dict] = {}
    last: dict[str, dict] = {}
    for record in read_metrics(metrics_path):
        if record.get("kind") == "lanes" and record["t"] >= window_start_t:
            for rank, status in record.get("ranks", {}).items():
                if "cpu_seconds" in status:
                    first.setdefault(rank, status)
                    last[rank] = status
    roles: dict[str, dict] = {}
    for rank, a in first.items():
        b = last[rank]
        seconds = b["seconds"] - a["seconds"]
        if seconds <= 0:
            continue
        role = roles.setdefault(b["role"], {"ranks": 0, "process": 0.0, "lanes": 0.0})
        role["ranks"] += 1
        role["process"] += 1e3 * (b["cpu_seconds"] - a["cpu_seconds"]) / seconds / env_steps_per_s
        role["lanes"] += 1e3 * (b["lanes_cpu_seconds"] - a["lanes_cpu_seconds"]) / seconds / env_steps_per_s
    return {name: {"ranks": r["ranks"], "process": round(r["process"], 4), "lanes": round(r["lanes"], 4),
                   "outside_lanes": round(r["process"] - r["lanes"], 4)} for name, r in roles.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/throughput.yaml")
    parser.add_argument("--out", default="bench_out/throughput")
    parser.add_argument("--probe-seconds", type=float, default=10.0, help="time each lane alone")
    parser.add_argument("--ranks", type=int, default=0, help="also run both modes under mpiexec -n RANKS")
    parser.add_argument("--rounds", type=int, default=1, help=(
        "repeat the probes and the runs this many times, the runs in reverse order every other "
        "round; each fraction is taken within its round, the headline is the median"))
    parser.add_argument("--evict-mib", type=int, default=64, help=(
        "also time the infer lane with a buffer this large rewritten before each call (more than "
        "the last-level cache: the caches other lanes leave it in a run); 0 skips it"))
    parser.add_argument("--warmup-share", type=float, default=0.2)
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.config, args.overrides)
    cores = len(os.sched_getaffinity(0))
    variants = [("local", [])]
    if args.ranks:
        variants.append((f"mpi{args.ranks}", [mpiexec(), "-n", str(args.ranks)]))

    results: dict = {"config": args.config, "overrides": args.overrides, "cores": cores}
    if args.rounds == 1:
        results.update(run_round(args, cfg, cores, variants, out, index=0))
        write_results(out / "throughput.json", results)
    else:
        results["rounds"] = []
        for index in range(args.rounds):
            print(f"\nround {index}:", flush=True)
            results["rounds"].append(run_round(args, cfg, cores, variants, out / f"round_{index}", index))
            results["median"] = median_ratios(results["rounds"])
            write_results(out / "throughput.json", results)
        print(f"\nmedians over {args.rounds} rounds (range):")
        for key, value in results["median"].items():
            if not key.endswith("_range"):
                low, high = results["median"].get(f"{key}_range", [value, value])
                print(f"  {key:<34}{value:6.2f}  ({low:.2f}-{high:.2f})")
    return 0


def run_order(variants: list[tuple[str, list[str]]], index: int) -> list[tuple[str, list[str], str]]:
    """(label, launcher prefix, mode) of round `index`'s runs; odd rounds run them in reverse, so
    drift over a round does not always favour the same run."""
    runs = [(label, prefix, mode) for label, prefix in variants for mode in ("sync", "async")]
    return runs if index % 2 == 0 else runs[::-1]


def run_round(args: argparse.Namespace, cfg: Config, cores: int, variants: list[tuple[str, list[str]]],
              out: Path, index: int) -> dict:
    """Probe the lanes alone, then run every variant in both modes; each run's fraction of the
    model and each variant's async/sync, in `ratios`."""
    print(f"lane costs alone ({args.probe_seconds:.0f} s each) ...", flush=True)
    model = model_bounds(measure(cfg, args.probe_seconds), cores)
    for name, c in model["costs"].items():
        print(f"  {name:<7} {1e3 * c['wall_per_step']:7.3f} ms/step wall  {1e3 * c['cpu_per_step']:7.3f} "
              f"ms/step CPU  ({c['cores_used']:.2f} cores)")
    cold = None
    if args.evict_mib:
        cold = asdict(cold_infer_cost(cfg, args.probe_seconds, args.evict_mib))
        print(f"  infer with {args.evict_mib} MiB rewritten before each call: {1e3 * cold['cpu_per_step']:.3f} "
              f"ms/step CPU (not in the model)")
    runs: dict = {}
    for label, prefix, mode in run_order(variants, index):
        run_dir = out / f"{label}-{mode}"
        summary = run_main(f"{label}-{mode}", prefix, ["--config", args.config, *args.overrides,
                                                        f"run.mode={mode}"], run_dir, args.timeout)
        rates = steady_rates(run_dir / "metrics.jsonl", args.warmup_share)
        load = steady_load(run_dir / "metrics.jsonl", rates["window_start_t"], rates["env_steps_per_s"])
        runs[f"{label}-{mode}"] = {**rates, **load, "lanes": summary["lanes"], "wall_seconds": summary["wall_seconds"],
                                   "lane_cpu_ms_per_step": lane_cpu_per_step(run_dir / "metrics.jsonl", summary,
                                                                             rates["window_start_t"]),
                                   "role_cpu_ms_per_step": role_cpu_per_step(run_dir / "metrics.jsonl",
                                                                             rates["window_start_t"],
                                                                             rates["env_steps_per_s"])}
    runs = {f"{label}-{mode}": runs[f"{label}-{mode}"]  # in the table's order, whichever ran first
            for label, _, mode in run_order(variants, 0)}

    result: dict = {"model": model, "infer_caches_evicted": cold, "runs": runs, "ratios": {}}
    model_ratio = model["async_steps_per_s"] / model["sync_steps_per_s"]
    print(f"\n{'run':<14}{'env steps/s':>12}{'trained/s':>11}{'model':>9}{'of model':>10}{'lag':>6}")
    for name, r in runs.items():
        bound = model["sync_steps_per_s"] if name.endswith("-sync") else model["async_steps_per_s"]
        r["model_steps_per_s"] = bound
        r["fraction_of_model"] = result["ratios"][f"{name}_of_model"] = r["env_steps_per_s"] / bound
        print(f"{name:<14}{r['env_steps_per_s']:>12.1f}{r['trained_samples_per_s']:>11.1f}{bound:>9.1f}"
              f"{r['fraction_of_model']:>10.2f}{r['lag_mean']:>6.2f}")
    for label, _ in variants:
        ratio = runs[f"{label}-async"]["env_steps_per_s"] / runs[f"{label}-sync"]["env_steps_per_s"]
        result[f"{label}_async_over_sync"] = result["ratios"][f"{label}_async_over_sync"] = ratio
        result["ratios"][f"{label}_async_over_sync_of_model"] = ratio / model_ratio
        busiest = max(runs[f"{label}-async"]["lanes"].items(), key=lambda kv: kv[1].get("busy", 0))
        print(f"{label}: async / sync = {ratio:.2f} (model {model_ratio:.2f}); "
              f"busiest async lane: {busiest[0]} ({busiest[1]['busy']:.2f} busy)")
    print(f"async bound limited by: {model['async_limited_by']}")
    model_cpu_ms = 1e3 * sum(c["cpu_per_step"] for c in model["costs"].values())
    print(f"\nhost CPUs busy, and the job's CPU per env step (the probes': {model_cpu_ms:.3f} ms)")
    for name, r in runs.items():
        if "host_busy_share" in r:
            print(f"{name:<14}{r['host_busy_share']:>6.1%} busy  {r['job_cpu_ms_per_step']:7.3f} ms/step "
                  f"on {r['job_cores']:.2f} cores")
    print("\neach lane's CPU-ms per env step (the sample lane with its env workers), alone and in each run "
          "(* over the whole run)")
    print(f"{'':<14}" + "".join(f"{lane:>12}" for lane in model["costs"]))
    print(f"{'alone':<14}" + "".join(f"{1e3 * c['cpu_per_step']:>12.3f}" for c in model["costs"].values()))
    if cold is not None:
        print(f"{'cold caches':<14}" + "".join(f"{1e3 * cold['cpu_per_step']:>12.3f}" if lane == "infer" else
                                               f"{'':>12}" for lane in model["costs"]))
    for name, r in runs.items():
        cpu = r["lane_cpu_ms_per_step"]
        cells = [f"{cpu['steady'][lane]:.3f} " if lane in cpu["steady"] else
                 f"{cpu['whole_run'][lane]:.3f}*" if lane in cpu["whole_run"] else "n/a " for lane in model["costs"]]
        print(f"{name:<14}" + "".join(f"{cell:>12}" for cell in cells))
    print("\neach role's CPU-ms per env step over the steady window: its processes with their env workers, "
          "their lanes, and the rest (data pump, control plane, main thread)")
    for name, r in runs.items():
        parts = "  ".join(f"{role} x{v['ranks']} {v['process']:.3f} = {v['lanes']:.3f} + {v['outside_lanes']:.3f}"
                          for role, v in r["role_cpu_ms_per_step"].items())
        print(f"{name:<14}{parts}")
    print("\nwhere each lane's time went (share of its run: compute / copy / wait / poll)")
    for name, r in runs.items():
        parts = "  ".join(f"{lane} " + "/".join(f"{share:.2f}" for share in v["breakdown"].values())
                          for lane, v in r["lanes"].items())
        print(f"{name:<14}{parts}")
    return result


if __name__ == "__main__":
    sys.exit(main())
