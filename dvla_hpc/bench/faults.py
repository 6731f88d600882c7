"""Benchmark: faults done to jobs, counted. A hung rank of each role (SIGSTOP), a killed rank of
each role (SIGKILL) followed by a resume, and the whole job SIGKILLed at random moments, each
kill followed by `--resume DIR`.

    python -m dvla_hpc.bench faults [--out bench_out/faults] [--kills 10] [--ranks 3]

Prints one line per fault and writes JSON; exit code 1 if any fault was not survived."""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from dvla_hpc.bench import job_faults
from dvla_hpc.bench.runs import write_results

ROLES = ("sim", "infer", "learn")


def hung_ranks(out: Path, ranks: int, timeout_s: float) -> list[dict]:
    found = []
    for role in ROLES:
        result = job_faults.signal_rank(out / f"hung_{role}", ranks, role, signal.SIGSTOP, timeout_s,
                                        timeout_s + 5)
        result["survived"] = bool(result["ended_after_s"] is not None
                                  and result["ended_after_s"] <= timeout_s + 5 and result["named"])
        found.append(result)
        print(f"hung {role:<6} rank {result['rank']}: job ended after {result['ended_after_s']} s "
              f"(limit {timeout_s + 5:g}); {result['message']}", flush=True)
    return found


def killed_ranks(out: Path, ranks: int) -> list[dict]:
    found = []
    for role in ROLES:
        run = out / f"killed_{role}"
        result = job_faults.signal_rank(run, ranks, role, signal.SIGKILL, 60, 10)
        target = result["checkpoint_env_steps"] + 300
        resumed = job_faults.launch(run, ranks, f"run.total_env_steps={target}", resume=True)
        finished = resumed.wait(600) is not None and resumed.proc.returncode == 0
        summary = json.loads((run / "summary.json").read_text()) if finished else {}
        result["resumed_to_env_steps"] = summary.get("env_steps")
        result["survived"] = bool(result["ended_after_s"] is not None and result["ended_after_s"] <= 10
                                  and finished and summary["env_steps"] >= target)
        found.append(result)
        print(f"killed {role:<6} rank {result['rank']}: job ended after {result['ended_after_s']} s "
              f"(limit 10); files read ({result['episodes_readable']} episodes); resumed from version "
              f"{result['checkpoint_version']} to {result['resumed_to_env_steps']} env steps", flush=True)
    return found


def whole_job_kills(out: Path, ranks: int, kills: int, seed: int) -> dict:
    legs = job_faults.kill_and_resume(out / f"kills_{ranks}", ranks, kills, seed)
    versions = [leg["checkpoint_version"] for leg in legs]
    steps = [leg["checkpoint_env_steps"] for leg in legs]
    survived = ([leg["ended"] for leg in legs] == ["killed"] * kills + ["finished"]
                and versions == sorted(versions) and steps == sorted(steps))
    for leg in legs:
        print(f"  leg {leg['leg']}: {leg['ended']}; files read: {leg['episodes']} episodes in "
              f"{leg['trajectory_files']} files, {leg['metric_records']} metric records; newest "
              f"checkpoint version {leg['checkpoint_version']} at {leg['checkpoint_env_steps']} env steps",
              flush=True)
    return {"ranks": ranks, "kills": kills, "legs": legs, "survived": survived}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_out/faults")
    parser.add_argument("--ranks", type=int, default=3)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--heartbeat-timeout", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"hung": hung_ranks(out, args.ranks, args.heartbeat_timeout),
               "killed": killed_ranks(out, args.ranks), "whole_job": []}
    for ranks in (1, args.ranks):
        print(f"whole job of {ranks} rank(s) SIGKILLed {args.kills} times, each followed by --resume:")
        results["whole_job"].append(whole_job_kills(out, ranks, args.kills, args.seed))
    counts = {kind: f"{sum(r['survived'] for r in results[kind])}/{len(results[kind])}"
              for kind in ("hung", "killed", "whole_job")}
    results["survived"] = counts
    print(f"\nsurvived: hung ranks {counts['hung']}, killed ranks {counts['killed']}, "
          f"whole-job kill campaigns {counts['whole_job']} ({args.kills} kills each)")
    write_results(out / "results.json", results)
    return 0 if all(r["survived"] for kind in ("hung", "killed", "whole_job") for r in results[kind]) else 1


if __name__ == "__main__":
    sys.exit(main())
