"""One rank's evaluation loop: E envs stepped in lockstep, one batched policy call per step.

The policy always sees a full batch of E rows; the rows of idle envs keep their last inputs.
CPU kernels pick their blocking by batch size, which moves logits by ~1e-7 and can flip an
argmax, so a fixed batch shape is what keeps each episode's result the same whatever the rank
count (it does depend on E)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from dvla_hpc.envs.protocol import Env, Observation
from dvla_hpc.evaluate.plan import PlannedEpisode
from dvla_hpc.evaluate.recording import EpisodeTape
from dvla_hpc.model.tokens import ActionBins
from dvla_hpc.model.vla import PolicyBatch, VLAPolicy
from dvla_hpc.runtime.devices import autocast


@dataclass(frozen=True)
class EpisodeResult:
    task: int
    trial: int
    seed: int
    success: bool
    env_steps: int  # simulator steps
    decisions: int  # policy calls (an action chunk of k simulator steps is one)
    total_reward: float


class GreedyActions:
    """The most likely bin of every action dimension (ties: the lowest bin)."""

    def start(self, slot: int, episode: PlannedEpisode) -> None:
        pass

    def choose(self, logits: torch.Tensor, slots: list[int]) -> torch.Tensor:
        return logits.argmax(-1)


class SampledActions:
    """Draws from the policy with one generator per episode, seeded by (seed, task, trial), so the
    draws do not depend on which rank or env slot runs the episode."""

    def __init__(self, seed: int, envs: int, device: torch.device):
        self.seed = seed
        self.generators = [torch.Generator(device) for _ in range(envs)]

    def start(self, slot: int, episode: PlannedEpisode) -> None:
        state = np.random.SeedSequence([self.seed, episode.task, episode.trial]).generate_state(1)[0]
        self.generators[slot].manual_seed(int(state))

    def choose(self, logits: torch.Tensor, slots: list[int]) -> torch.Tensor:
        probs = torch.softmax(logits.float(), dim=-1)
        tokens = torch.zeros(logits.shape[:2], dtype=torch.int64, device=logits.device)
        for slot in slots:
            tokens[slot] = torch.multinomial(probs[slot], 1, generator=self.generators[slot]).squeeze(-1)
        return tokens


@dataclass
class _Running:
    episode: PlannedEpisode
    observation: Observation
    tape: EpisodeTape | None
    env_steps: int = 0
    decisions: int = 0
    total_reward: float = 0.0
    success: bool = False

    def result(self) -> EpisodeResult:
        e = self.episode
        return EpisodeResult(e.task, e.trial, e.seed, self.success, self.env_steps, self.decisions,
                             self.total_reward)


Finished = Callable[[EpisodeResult, EpisodeTape | None], None]


class EvalRollout:
    def __init__(self, envs: list[Env], batch_rows: int, policy: VLAPolicy, instruction_tokens: torch.Tensor,
                 bins: ActionBins, device: torch.device, chooser: GreedyActions | SampledActions,
                 bf16: bool = False, record: bool = False):
        """`batch_rows` >= len(envs): the policy's batch size, the same on every rank (see above)."""
        self.envs, self.policy, self.bins = envs, policy, bins
        self.device, self.chooser, self.bf16, self.record = device, chooser, bf16, record
        self.spec = envs[0].spec
        self.instruction_tokens = instruction_tokens
        n = batch_rows
        self.images = torch.zeros((n, *self.spec.frames_shape), dtype=torch.uint8)
        self.proprio = torch.zeros((n, self.spec.proprio_dim), dtype=torch.float32)
        self.words = torch.zeros((n, instruction_tokens.shape[1]), dtype=torch.int64)

    def run(self, episodes: list[PlannedEpisode], finished: Finished) -> list[EpisodeResult]:
        """Runs every episode; `finished(result, tape)` hears of each as it ends (tape: with record)."""
        queue = iter(episodes)
        running: list[_Running | None] = [self.start(slot, queue) for slot in range(len(self.envs))]
        results = []
        while any(running):
            active = [slot for slot, run in enumerate(running) if run is not None]
            actions = self.act(active)
            for slot in active:
                run = running[slot]
                if run.tape is not None:
                    run.tape.add(run.observation, actions[slot])
                outcome = self.envs[slot].step(actions[slot])
                if run.tape is not None:
                    run.tape.outcome(outcome.reward, outcome.env_steps)
                run.env_steps += outcome.env_steps
                run.decisions += 1
                run.total_reward += outcome.reward
                run.observation = outcome.observation
                if outcome.done:
                    run.success = outcome.success
                    results.append(run.result())
                    finished(results[-1], run.tape)
                    running[slot] = self.start(slot, queue)
                elif run.decisions >= self.spec.max_episode_steps:
                    raise RuntimeError(
                        f"{self.spec.name}: task {run.episode.task} seed {run.episode.seed} ran past its "
                        f"cap of {self.spec.max_episode_steps} steps without done")
                else:
                    self.load(slot, outcome.observation)
        return results

    def start(self, slot: int, queue) -> _Running | None:
        episode = next(queue, None)
        if episode is None:
            return None
        observation = self.envs[slot].reset(episode.seed, task=episode.task)
        if observation.task_index != episode.task:
            raise RuntimeError(f"{self.spec.name}: reset to task {episode.task} gave an observation "
                               f"of task {observation.task_index}")
        self.chooser.start(slot, episode)
        self.load(slot, observation)
        return _Running(episode, observation, EpisodeTape() if self.record else None)

    def load(self, slot: int, observation: Observation) -> None:
        self.images[slot] = torch.from_numpy(np.asarray(observation.image))
        self.proprio[slot] = torch.from_numpy(np.asarray(observation.proprio, dtype=np.float32))
        self.words[slot] = self.instruction_tokens[observation.task_index]

    @torch.inference_mode()
    def act(self, active: list[int]) -> np.ndarray:
        """Continuous actions (E, A) for every row; only the active rows are used."""
        batch = PolicyBatch(self.images.to(self.device), self.proprio.to(self.device),
                            self.words.to(self.device))
        with autocast(self.device, self.bf16):
            logits = self.policy(batch)
        tokens = self.chooser.choose(logits.float(), active).cpu()
        return self.bins.to_actions(tokens).numpy()
