"""Benchmark: Sample Factory 2.1.1 APPO vs dvla_hpc on gymnasium Reacher-v5 from 64x64 pixels, with the raw limit.

    python -m dvla_hpc.bench reacher [--out bench_out/reacher] [--seconds 150] [--raw-seconds 20] [--rounds 1] [--skip-sf]

In sequence on this machine, all with the same env (make_rendering_gym_env("Reacher-v5", 64): same
rendering settings, no frame skip, 50-step episodes):
  1. the raw limit: 2 processes stepping + rendering one env each with random actions, no learning;
  2. Sample Factory 2.1.1 APPO (async, CPU) in .venv-sf/ (built on first use by
     dvla_hpc.bench.sample_factory_venv), for --seconds of training, with the same env worker
     processes and envs as the dvla_hpc config (configs/reacher_pixels.yaml: 2 x 32);
  3. dvla_hpc with that config for --seconds of wall clock;
  4. the shared-work bound (bench/shared_work.py): the raw limit's CPU per frame plus the conv
     stack's, acting and training, which every framework pays; cores / that bounds any of them.
Learning runs are compared on steady-state env frames/s: the slope of the frame counter over the
window from `warmup` seconds after the first counted frames to the last 5-second report (SF's "Fps
is" log lines; dvla_hpc's "lanes" lines in metrics.jsonl), so start-up is left out of both.
With --rounds N the three runs repeat N times, Sample Factory and dvla_hpc taking turns to go
first, each round in <out>/round_<k>/; every ratio is taken within a round and the headline is the
median over rounds, so the machine's drift over minutes (the same run varies by 10-15% here)
weighs on both sides alike.
Writes <out>/reacher.json (also after each step, so a failed or interrupted run keeps what it has).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SUBPROCESS_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MUJOCO_GL": "egl", "LP_NUM_THREADS": "0"}
STARTUP_ALLOWANCE_S = 240.0  # imports, env/worker start-up, final checkpoint, shutdown


def machine_info() -> dict:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_model": model, "cpu_count": os.cpu_count(), "usable_cpus": affinity,
            "platform": platform.platform(), "python": platform.python_version()}


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def tail(path: Path, chars: int = 3000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-chars:]


def run_logged(label: str, cmd: list[str], log_path: Path, timeout_s: float) -> dict:
    """Run cmd in its own session, stdout+stderr to log_path; on timeout end its whole process group."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"[{label}] {' '.join(cmd)}", flush=True)
    print(f"[{label}] log: {log_path} (timeout {timeout_s:.0f} s)", flush=True)
    env = {**os.environ, **SUBPROCESS_ENV}
    started = time.perf_counter()
    timed_out = False
    with open(log_path, "w") as log:
        try:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        except OSError as exc:
            return {"ok": False, "returncode": None, "seconds": 0.0, "error": f"could not start: {exc}"}
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _end_group(proc)
        finally:
            if proc.poll() is None:  # KeyboardInterrupt and the like: leave nothing running
                _end_group(proc)
    seconds = round(time.perf_counter() - started, 1)
    result = {"ok": proc.returncode == 0 and not timed_out, "returncode": proc.returncode,
              "seconds": seconds, "timed_out": timed_out}
    if not result["ok"]:
        why = f"timed out after {timeout_s:.0f} s" if timed_out else f"exit code {proc.returncode}"
        result["error"] = f"{why}; log tail:\n{tail(log_path)}"
        print(f"[{label}] FAILED ({why}). Last lines of {log_path}:\n{tail(log_path)}", file=sys.stderr,
              flush=True)
    return result


def _end_group(proc: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGINT, 15), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def steady_from_points(points: list[tuple[float, int]], warmup_s: float) -> dict:
    """Slope of (t, steps) over [first t with steps > 0 + warmup_s, last t]."""
    counted = [p for p in points if p[1] > 0]
    if len(counted) < 2:
        return {"frames_per_second": None, "window_s": 0.0,
                "reason": f"only {len(counted)} report(s) with steps > 0"}
    t_first = counted[0][0]
    window = [p for p in counted if p[0] >= t_first + warmup_s]
    note = None
    if len(window) < 2:
        window = counted[-2:]
        note = "run shorter than warm-up + 2 reports: window is the last two reports"
    (t0, s0), (t1, s1) = window[0], window[-1]
    dt = max(t1 - t0, 1e-9)
    out = {"frames_per_second": round((s1 - s0) / dt, 2), "window_s": round(dt, 2),
           "window_start_s_after_first_frames": round(t0 - t_first, 2), "frames_in_window": s1 - s0}
    if note:
        out["note"] = note
    return out


def dvla_steady(metrics_path: Path, warmup_s: float) -> dict:
    points = []
    try:
        lines = metrics_path.read_text().splitlines()
    except OSError:
        return {"frames_per_second": None, "window_s": 0.0, "reason": f"no {metrics_path}"}
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("kind") == "lanes" and "t" in row and "env_steps" in row:
            points.append((float(row["t"]), int(row["env_steps"])))
    return steady_from_points(points, warmup_s)


def run_raw(out: Path, seconds: float, timeout_slack: float) -> dict:
    path = out / "raw_limit.json"
    path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "dvla_hpc.bench.raw_limit", "--processes", "2", "--seconds", f"{seconds:g}",
           "--json", str(path)]
    run = run_logged("raw limit", cmd, out / "raw_limit.log", seconds + timeout_slack)
    result = {"run": run}
    if path.exists():
        result.update(json.loads(path.read_text()))
    return result


def envs_of(config: str, overrides: list[str]) -> tuple[int, int]:
    """(env worker processes, envs each) of the dvla_hpc run: Sample Factory gets the same."""
    from dvla_hpc.config.loader import load_config
    env = load_config(config, overrides).env
    if env.workers_per_sampler < 1 or env.envs_per_sampler % env.workers_per_sampler:
        raise SystemExit(f"{config}: the comparison needs env.envs_per_sampler ({env.envs_per_sampler}) "
                         f"split evenly over env.workers_per_sampler ({env.workers_per_sampler}) >= 1")
    return env.workers_per_sampler, env.envs_per_sampler // env.workers_per_sampler


def run_sample_factory(out: Path, seconds: float, warmup_s: float, timeout_slack: float,
                       envs: tuple[int, int]) -> dict:
    from dvla_hpc.bench.sample_factory_venv import VenvError, ensure_venv, venv_python

    try:
        stamp = ensure_venv()
    except VenvError as err:
        print(f"[sample_factory] could not build .venv-sf: {err}", file=sys.stderr, flush=True)
        return {"run": {"ok": False, "error": f".venv-sf: {err}"}}
    run_dir = out / "sample_factory"
    shutil.rmtree(run_dir, ignore_errors=True)
    result_path = run_dir / "result.json"
    cmd = [str(venv_python()), "-m", "dvla_hpc.bench.sample_factory_side", "--out", str(run_dir),
           "--result", str(result_path), "--seconds", f"{seconds:g}", "--warmup", f"{warmup_s:g}",
           "--num-workers", str(envs[0]), "--envs-per-worker", str(envs[1])]
    run = run_logged("sample_factory", cmd, out / "sample_factory.log", seconds + timeout_slack)
    result = {"run": run, "venv": stamp.get("versions")}
    if result_path.exists():
        side = json.loads(result_path.read_text())
        side.pop("reports", None)
        result.update(side)
    return result


def run_dvla(out: Path, seconds: float, warmup_s: float, config: str, overrides: list[str],
             timeout_slack: float) -> dict:
    run_dir = out / "dvla_hpc"
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "dvla_hpc.main", "--config", config, "--out", str(run_dir),
           "run.total_env_steps=1000000000", f"run.wall_clock_limit_s={seconds:g}", "run.progress_bar=false",
           "run.metrics_every_s=5", *overrides]
    run = run_logged("dvla_hpc", cmd, out / "dvla_hpc.log", seconds + timeout_slack)
    result: dict = {"run": run, "config": config, "overrides": overrides}
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        for key in ("env_steps", "wall_seconds", "env_steps_per_second", "episodes", "updates",
                    "samples_trained", "samples_dropped_stale", "policy_lag_mean", "stopped_by"):
            result[key] = summary.get(key)
        result["overall_frames_per_second"] = summary.get("env_steps_per_second")
    elif run["ok"]:
        run["ok"] = False
        run["error"] = f"no {summary_path}"
    steady = dvla_steady(run_dir / "metrics.jsonl", warmup_s)
    result["steady"] = steady
    result["frames_per_second"] = steady["frames_per_second"]
    return result


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_table(results: dict) -> None:
    """One round's runs, its ratios and its shared-work bound."""
    raw = results.get("raw_limit", {}).get("frames_per_second")
    print(f"\n{'run':<22}{'frames/s':>10}{'of raw':>9}{'overall/s':>11}{'frames':>10}{'window s':>10}")
    for key, label in (("raw_limit", "raw limit (2 procs)"), ("sample_factory", "Sample Factory APPO"),
                       ("dvla_hpc", "dvla_hpc")):
        r = results.get(key)
        if r is None:
            continue
        fps = r.get("frames_per_second")
        share = "n/a" if fps is None or not raw else f"{100.0 * fps / raw:.0f}%"
        if key == "raw_limit":
            frames = sum(p["frames"] for p in r.get("per_process", [])) or None
            overall, window = fps, r.get("seconds")
        else:
            frames = r.get("env_frames", r.get("env_steps"))
            overall, window = r.get("overall_frames_per_second"), r.get("steady", {}).get("window_s")
        status = "" if r.get("run", {}).get("ok", True) else "  FAILED"
        print(f"{label:<22}{_fmt(fps, '.1f'):>10}{share:>9}"
              f"{_fmt(overall, '.1f'):>11}{_fmt(frames, 'd'):>10}{_fmt(window, '.0f'):>10}{status}")
    ratio = results.get("ratios", {}).get("dvla_hpc_over_sample_factory")
    if ratio is not None:
        print(f"dvla_hpc / Sample Factory (steady frames/s): {ratio:.2f}x")
    bound = results.get("shared_work")
    if bound:
        shares = ", ".join(f"{label} {100 * results['ratios'][key]:.0f}%" for key, label in
                           (("sample_factory_of_shared_work_bound", "Sample Factory"),
                            ("dvla_hpc_of_shared_work_bound", "dvla_hpc")) if key in results["ratios"])
        print(f"shared-work bound: {bound['frames_per_second']:.0f} frames/s on {bound['cores']} cores "
              f"(env {bound['env_ms_per_frame']:.3f} + conv act {bound['act_ms_per_frame']:.3f} + conv train "
              f"{bound['train_ms_per_frame']:.3f} CPU-ms a frame); {shares}")


def compute_ratios(results: dict) -> dict:
    raw = results.get("raw_limit", {}).get("frames_per_second")
    sf = results.get("sample_factory", {}).get("frames_per_second")
    dvla = results.get("dvla_hpc", {}).get("frames_per_second")
    ratios = {}
    if raw:
        if sf is not None:
            ratios["sample_factory_of_raw"] = round(sf / raw, 4)
        if dvla is not None:
            ratios["dvla_hpc_of_raw"] = round(dvla / raw, 4)
    if sf and dvla is not None:
        ratios["dvla_hpc_over_sample_factory"] = round(dvla / sf, 4)
    bound = results.get("shared_work", {}).get("frames_per_second")
    if bound:
        for key, fps in (("sample_factory", sf), ("dvla_hpc", dvla)):
            if fps is not None:
                ratios[f"{key}_of_shared_work_bound"] = round(fps / bound, 4)
    return ratios


def median_ratios(rounds: list[dict]) -> dict:
    """Each ratio's median over the rounds that have it, with its range."""
    out: dict = {}
    for key in sorted({k for r in rounds for k in r.get("ratios", {})}):
        values = sorted(r["ratios"][key] for r in rounds if key in r.get("ratios", {}))
        out[key] = round(statistics.median(values), 4)
        if len(values) > 1:
            out[f"{key}_range"] = [values[0], values[-1]]
    return out


def round_order(index: int, skip_sf: bool) -> list[str]:
    """The runs of round `index`: the raw limit first, then the learners, who goes first alternating."""
    learners = ["dvla_hpc"] if skip_sf else ["sample_factory", "dvla_hpc"]
    return ["raw_limit", *(learners if index % 2 == 0 else learners[::-1])]


def shared_work(results: dict, config: str, overrides: list[str]) -> dict | None:
    """The shared-work bound, from this run's raw limit (None if the raw limit failed)."""
    from dvla_hpc.bench.shared_work import measure
    from dvla_hpc.config.loader import load_config
    raw = results.get("raw_limit", {})
    if not raw.get("per_process"):
        return None
    cfg = load_config(config, overrides)
    return measure(raw, cfg.env.image_size, cfg.env.envs_per_sampler // 2, cfg.learn.minibatch_size,
                   len(os.sched_getaffinity(0)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_out/reacher"))
    parser.add_argument("--seconds", type=float, default=150.0, help="training wall time of each learning run")
    parser.add_argument("--raw-seconds", type=float, default=20.0, help="measuring time of the raw limit")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds left out of the steady-state window (default: min(30, seconds/4))")
    parser.add_argument("--skip-sf", action="store_true", help="leave out Sample Factory (no .venv-sf)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the runs this many times, alternating who goes first; ratios are medians")
    parser.add_argument("--config", default="configs/reacher_pixels.yaml")
    parser.add_argument("--timeout-slack", type=float, default=STARTUP_ALLOWANCE_S,
                        help="seconds each subprocess may run beyond its measuring time")
    parser.add_argument("overrides", nargs="*", help="extra dvla_hpc key=value overrides")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.raw_seconds <= 0:
        parser.error("--seconds and --raw-seconds must be positive")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    warmup = min(30.0, args.seconds / 4) if args.warmup is None else args.warmup
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "reacher.json"
    config = str((REPO / args.config) if not Path(args.config).is_absolute() else Path(args.config))
    envs = envs_of(config, args.overrides)

    results: dict = {
        "benchmark": "Reacher-v5 from 64x64 pixels: raw limit vs Sample Factory 2.1.1 APPO vs dvla_hpc",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "settings": {"seconds": args.seconds, "raw_seconds": args.raw_seconds, "warmup_s": warmup,
                     "rounds": args.rounds, "env": "make_rendering_gym_env('Reacher-v5', 64)", "frameskip": 1,
                     "env_processes": envs[0], "envs_per_process": envs[1], "config": args.config,
                     "overrides": args.overrides, "subprocess_env": SUBPROCESS_ENV},
        "rounds": [],
    }

    def save() -> None:
        for r in results["rounds"]:
            r["ratios"] = compute_ratios(r)
        results["ratios"] = median_ratios(results["rounds"])
        report_path.write_text(json.dumps(results, indent=2) + "\n")

    failed = []
    for index in range(args.rounds):
        where = out if args.rounds == 1 else out / f"round_{index}"
        where.mkdir(parents=True, exist_ok=True)
        steps = {"raw_limit": lambda: run_raw(where, args.raw_seconds, args.timeout_slack),
                 "sample_factory": lambda: run_sample_factory(where, args.seconds, warmup, args.timeout_slack,
                                                              envs),
                 "dvla_hpc": lambda: run_dvla(where, args.seconds, warmup, config, args.overrides,
                                              args.timeout_slack)}
        this: dict = {"load_average": {}}
        results["rounds"].append(this)
        for name in round_order(index, args.skip_sf):
            this["load_average"][f"before_{name}"] = load_average()
            try:
                this[name] = steps[name]()
            except Exception as exc:  # a broken step must not lose the others' figures
                this[name] = {"run": {"ok": False, "error": f"{type(exc).__name__}: {exc}"}}
                print(f"[{name}] FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            if not this[name].get("run", {}).get("ok", False):
                failed.append(f"{name} (round {index})")
            save()
        this["load_average"]["end"] = load_average()
        bound = shared_work(this, config, args.overrides)
        if bound is not None:
            this["shared_work"] = bound
        save()
        if args.rounds > 1:
            print(f"\nround {index}:", end="")
        print_table(this)
    if args.rounds > 1:
        ratios = results["ratios"]
        for key, label in (("dvla_hpc_over_sample_factory", "dvla_hpc / Sample Factory"),
                           ("dvla_hpc_of_raw", "dvla_hpc of raw"),
                           ("dvla_hpc_of_shared_work_bound", "dvla_hpc of the shared-work bound")):
            if key in ratios:
                low, high = ratios.get(f"{key}_range", [ratios[key]] * 2)
                print(f"median over {args.rounds} rounds, {label}: {ratios[key]:.2f} ({low:.2f}-{high:.2f})")
    print(f"wrote {report_path}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
