"""Benchmark: faults done to jobs, counted. Env faults of every kind in one run each (a share of
the episodes crash, hang, stall, raise, or return NaN or misshapen observations), a hung rank of
each role (SIGSTOP), a killed rank of each role (SIGKILL) followed by a resume, and the whole job
SIGKILLed at random moments, each kill followed by `--resume DIR`, and a straggling sim rank (run
a share of the time) beside the same job without one: the other samplers must keep 90% of their pace.
Malformed messages (control messages, slab headers and sizes, weight-tree headers) are fuzzed
in-process against the checks that guard them on a receiving rank.

    python -m dvla_hpc.bench faults [--out bench_out/faults] [--kills 10] [--ranks 3]
                                    [--env-rate 0.3] [--env-steps 5000] [--env-kinds crash,hang,...]
                                    [--straggler-ranks 6] [--straggler-share 0.1] [--straggler-seconds 60]
                                    [--message-trials 2000]
                                    [--only env,hung,killed,whole_job,straggler,messages]

Prints one line per fault and writes JSON; exit code 1 if any fault was not survived."""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from dvla_hpc.bench import job_faults
from dvla_hpc.bench.env_faults import KINDS, env_fault_run
from dvla_hpc.bench.message_fuzz import fuzz_messages, message_report
from dvla_hpc.bench.runs import write_results
from dvla_hpc.bench.straggler import print_comparison, straggler_compare

ROLES = ("sim", "infer", "learn")
PARTS = ("env", "hung", "killed", "whole_job", "straggler", "messages")


def env_faults(out: Path, rate: float, env_steps: int, kinds: list[str]) -> list[dict]:
    found = []
    for kind in kinds:
        result = env_fault_run(out / f"env_{kind}", kind, rate, env_steps)
        found.append(result)
        if result["exit_code"] != 0:
            print(f"env {kind:<6}: the run failed:\n{result['error']}", flush=True)
            continue
        print(f"env {kind:<6}: {result['failed_episodes']} of {result['episodes']} episodes lost "
              f"({result['worker_restarts']} worker restarts); {result['recorded']} recorded, "
              f"{result['recorded_faulted']} of them faulted, {result['corrupted']} corrupted; "
              f"success last {result['success_rate_last']:.2f}", flush=True)
    return found


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
    parser.add_argument("--env-rate", type=float, default=0.3, help="share of episodes that fault")
    parser.add_argument("--env-steps", type=int, default=5000, help="env steps of each env-fault run")
    parser.add_argument("--env-kinds", default=",".join(KINDS), help=f"comma-separated env faults of {KINDS}")
    parser.add_argument("--straggler-ranks", type=int, default=6)
    parser.add_argument("--straggler-share", type=float, default=0.1,
                        help="share of the time the straggler runs")
    parser.add_argument("--straggler-seconds", type=float, default=60, help="wall time of each straggler run")
    parser.add_argument("--message-trials", type=int, default=2000, help="fuzzed messages per corruption")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {PARTS}")
    args = parser.parse_args(argv)
    parts, kinds = args.only.split(","), args.env_kinds.split(",")
    for flag, given, known in (("--only", parts, PARTS), ("--env-kinds", kinds, KINDS)):
        if unknown := sorted(set(given) - set(known)):
            print(f"{flag}: unknown {unknown}; choose from {', '.join(known)}", file=sys.stderr)
            return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    if "env" in parts:
        results["env"] = env_faults(out, args.env_rate, args.env_steps, kinds)
    if "hung" in parts:
        results["hung"] = hung_ranks(out, args.ranks, args.heartbeat_timeout)
    if "killed" in parts:
        results["killed"] = killed_ranks(out, args.ranks)
    if "whole_job" in parts:
        results["whole_job"] = []
        for ranks in (1, args.ranks):
            print(f"whole job of {ranks} rank(s) SIGKILLed {args.kills} times, each followed by --resume:")
            results["whole_job"].append(whole_job_kills(out, ranks, args.kills, args.seed))
    if "straggler" in parts:
        found = straggler_compare(out / "straggler", args.straggler_ranks, args.straggler_seconds,
                                  args.straggler_share)
        print_comparison(found)
        results["straggler"] = [found]
    if "messages" in parts:
        print(f"malformed messages, {args.message_trials} of each corruption:")
        results["messages"] = message_report(fuzz_messages(args.message_trials, args.seed))
    counts = {part: f"{sum(r['survived'] for r in results[part])}/{len(results[part])}" for part in results}
    results["survived"] = counts
    print(f"\nsurvived: {', '.join(f'{part} {count}' for part, count in counts.items())}")
    label = "_".join(parts + (kinds if "env" in parts and kinds != list(KINDS) else []))
    write_results(out / f"results_{label}.json", results)
    return 0 if all(r["survived"] for part in counts for r in results[part]) else 1


if __name__ == "__main__":
    sys.exit(main())
