"""One rank's part of an evaluation: everything checked before any env is built (so bad input
ends every rank alike, exit 2), then its share of the episodes, then, on rank 0, the report."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from mpi4py import MPI

from dvla_hpc.config.loader import ConfigError, to_dict
from dvla_hpc.envs.registry import make_env
from dvla_hpc.evaluate.checkpoint_source import EvalInputError, first_line, load_weights, run_directory
from dvla_hpc.evaluate.plan import PlannedEpisode, initial_state_of, plan_episodes, rank_share, share_sizes
from dvla_hpc.evaluate.recording import EpisodeTape
from dvla_hpc.evaluate.report import build_report, format_table, score_tasks, write_report
from dvla_hpc.evaluate.request import LIBERO, EvalArgs, EvalRequest, build_request, env_label, select_tasks
from dvla_hpc.evaluate.result_gather import gather_results
from dvla_hpc.evaluate.rollout import EpisodeResult, EvalRollout, GreedyActions, SampledActions
from dvla_hpc.model.vla import VLAPolicy
from dvla_hpc.output.trajectory_writer import TrajectoryWriter
from dvla_hpc.planes.backoff import wait_requests
from dvla_hpc.runtime.devices import uses_bf16
from dvla_hpc.runtime.blueprint import Blueprint, env_kwargs
from dvla_hpc.runtime.devices import DeviceError, local_device
from dvla_hpc.runtime.mpi_run import PlacementRefused, refuse

PROGRESS_EVERY_S = 10.0


def agree_on_time(world: MPI.Comm) -> float:
    """Rank 0's clock, so that every rank names the same default output directory."""
    now = np.array([time.time()], dtype=np.float64)
    wait_requests(world.Ibcast(now, root=0), what="start time broadcast")
    return float(now[0])


def refused(world: MPI.Comm, problem: str | None) -> bool:
    """Collective: True on every rank if any rank has a problem (the lowest such rank prints it)."""
    try:
        refuse(world, problem, "eval")
    except PlacementRefused:
        return True
    return False


def eval_device(requested: str, rank: int) -> torch.device:
    device = local_device(requested)
    return torch.device("cuda", rank % torch.cuda.device_count()) if device.type == "cuda" else device


def default_out_dir(checkpoint: Path, label: str, started: float) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    return run_directory(checkpoint) / f"eval-{label}-{stamp}"


@dataclass
class EvalSession:
    world: MPI.Comm
    request: EvalRequest
    bp: Blueprint
    label: str
    tasks: list[int]
    plan: list[PlannedEpisode]
    policy: VLAPolicy
    device: torch.device
    out_dir: Path
    writer: TrajectoryWriter | None = None

    @classmethod
    def prepare(cls, args: EvalArgs, world: MPI.Comm,
                started: float) -> tuple["EvalSession | None", str | None]:
        """The session, or None and the problem with the input."""
        try:
            return cls.build(args, world, started), None
        except EvalInputError as err:
            return None, str(err)

    @classmethod
    def build(cls, args: EvalArgs, world: MPI.Comm, started: float) -> "EvalSession":
        request = build_request(args)
        cfg = request.cfg
        label = env_label(cfg)
        try:
            bp = Blueprint.from_config(cfg)
        except (ConfigError, ValueError, ImportError) as err:
            raise EvalInputError(f"env {label}: {first_line(err)}") from None
        tasks = select_tasks(args.tasks, request.default_tasks, bp.spec.instructions, label)
        try:
            device = eval_device(cfg.run.device, world.Get_rank())
        except DeviceError as err:
            raise EvalInputError(f"run.device: {err}") from None
        torch.set_num_threads(cfg.run.torch_threads)
        policy = load_weights(bp.make_policy(), request.checkpoint, request.checkpoint_path).to(device)
        out_dir = Path(args.out) if args.out else default_out_dir(request.checkpoint_path, label, started)
        if world.Get_rank() == 0:
            try:
                out_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise EvalInputError(f"--out: cannot create {out_dir}: {err.strerror}") from None
        plan = plan_episodes(tasks, request.trials, request.seed, bp.spec)
        return cls(world, request, bp, label, tasks, plan, policy, device, out_dir)

    def run(self) -> list[EpisodeResult] | None:
        """This rank's share of the episodes; all of them, ordered, on rank 0 (None elsewhere)."""
        rank, ranks = self.world.Get_rank(), self.world.Get_size()
        share = rank_share(self.plan, rank, ranks)
        rows = self.request.envs_per_rank
        cfg = self.request.cfg
        mine: list[EpisodeResult] = []
        if share:
            if self.request.record:
                self.writer = TrajectoryWriter(self.out_dir / "trajectories", rank, cfg.env.name,
                                               cfg.output.episodes_per_shard, env_kwargs=env_kwargs(cfg),
                                               task_catalogue=self.bp.spec.instructions)
            envs = [make_env(cfg.env.name, **env_kwargs(cfg)) for _ in range(min(rows, len(share)))]
            chooser = SampledActions(self.request.seed, rows, self.device) if self.request.sample \
                else GreedyActions()
            rollout = EvalRollout(envs, rows, self.policy, self.bp.instruction_tokens, self.bp.bins,
                                  self.device, chooser, uses_bf16(self.device, cfg.run), self.request.record)
            try:
                mine = rollout.run(share, EpisodeSink(self, len(share)))
            finally:
                for env in envs:
                    env.close()
        return gather_results(self.world, mine, share_sizes(len(self.plan), ranks))

    def report(self, results: list[EpisodeResult], command: str, wall_seconds: float) -> None:
        request, spec = self.request, self.bp.spec
        scores = score_tasks(results, self.tasks, spec.instructions)
        departures = list(request.protocol_departures)
        if self.request.cfg.env.name == LIBERO and spec.initial_states:
            if request.trials != spec.initial_states:
                departures.append(f"{request.trials} trial(s) per task instead of {spec.initial_states}")
            if (first := request.seed % spec.initial_states) != 0:
                departures.append(f"trials start at initial state {first}, not 0")
        version = request.checkpoint.counters.get("version")
        actions = "sampled" if request.sample else "greedy"
        heading = (f"{self.label} | {request.checkpoint_path} (policy version {version}) | "
                   f"{actions} actions | seed {request.seed}")
        env_steps = sum(r.env_steps for r in results)
        about = {
            "checkpoint": str(request.checkpoint_path), "policy_version": version,
            "checkpoint_counters": dict(request.checkpoint.counters), "env": self.label,
            "task_ids": self.tasks, "trials_per_task": request.trials, "seed": request.seed,
            "actions": actions, "protocol_departures": departures, "ranks": self.world.Get_size(),
            "envs_per_rank": request.envs_per_rank, "device": str(self.device),
            "wall_seconds": round(wall_seconds, 3), "env_steps": env_steps, "command": command,
            "config": to_dict(request.cfg),
        }
        path = self.out_dir / "eval.json"
        write_report(path, build_report(scores, results, lambda seed: initial_state_of(seed, spec), about))
        print(format_table(scores, heading))
        if self.request.cfg.env.name == LIBERO:
            protocol = "departs: " + "; ".join(departures) if departures else "published (LIBERO)"
            print(f"protocol: {protocol}")
        elif departures:
            print("note: " + "; ".join(departures))
        print(f"{env_steps} env steps in {wall_seconds:.1f}s on {self.world.Get_size()} rank(s); "
              f"results: {path}")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class EpisodeSink:
    """Hears of each finished episode: records it (with --record); rank 0 shows its progress."""

    def __init__(self, session: EvalSession, share: int):
        self.session, self.share = session, share
        self.version = int(session.request.checkpoint.counters.get("version", 0))
        self.done = 0
        self.last_print = time.monotonic()

    def __call__(self, result: EpisodeResult, tape: EpisodeTape | None) -> None:
        s = self.session
        if tape is not None and s.writer is not None:
            cfg = s.request.cfg
            s.writer.write_episode(tape.to_record(s.bp.spec, cfg.env.name, result.task, result.seed,
                                                  result.success, self.version, cfg.model.action_chunk))
        self.done += 1
        now = time.monotonic()
        if s.world.Get_rank() == 0 and (now - self.last_print >= PROGRESS_EVERY_S or self.done == self.share):
            self.last_print = now
            print(f"eval: rank 0 finished {self.done}/{self.share} of its episodes", file=sys.stderr,
                  flush=True)
