"""Action chunks: k actions per decision, run open-loop in the env, counted as k env steps, and
masked in the loss where an episode ended mid-chunk."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dvla_hpc.envs.action_chunk import ActionChunkEnv
from dvla_hpc.envs.registry import env_spec, make_env
from dvla_hpc.learn.grpo import clipped_token_loss


def test_a_chunk_runs_its_actions_in_order_and_sums_their_rewards():
    plain, chunked = make_env("tabletop_reach", image_size=32), make_env("tabletop_reach", action_chunk=3,
                                                                        image_size=32)
    actions = np.array([[0.5, -0.2], [0.1, 0.9], [-0.7, 0.3]], dtype=np.float32)
    plain.reset(4)
    chunked.reset(4)
    rewards = [plain.step(a).reward for a in actions]
    result = chunked.step(actions.reshape(-1))
    assert result.env_steps == 3
    assert result.reward == pytest.approx(sum(rewards))
    np.testing.assert_array_equal(result.observation.image, plain._observation().image)
    assert chunked.spec.action_dim == 6 and chunked.spec.max_episode_steps == 9  # ceil(25 / 3)
    assert env_spec("tabletop_reach", action_chunk=3, image_size=32) == chunked.spec


def test_a_chunk_stops_at_the_episode_end_and_says_how_many_steps_ran():
    env = ActionChunkEnv(make_env("tabletop_reach", image_size=32, max_episode_steps=5), 4)
    env.reset(0)
    first = env.step(np.zeros(8, np.float32))
    second = env.step(np.zeros(8, np.float32))
    assert (first.env_steps, first.done) == (4, False)
    assert (second.env_steps, second.done) == (1, True)  # the cap of 5 ended it one step in


def test_bad_chunk_sizes_are_refused():
    with pytest.raises(ValueError, match="action_chunk"):
        ActionChunkEnv(make_env("tabletop_reach", image_size=32), 0)


def test_tokens_of_actions_that_never_ran_carry_no_gradient():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, requires_grad=True)
    tokens = torch.randint(0, 5, (2, 4))
    old_logp = torch.log_softmax(logits.detach(), -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    executed = torch.tensor([[True, True, True, True], [True, True, False, False]])
    loss, _ = clipped_token_loss(logits, tokens, old_logp, torch.tensor([1.0, -1.0]), 0.2, 0.01, executed)
    loss.backward()
    assert logits.grad[1, 2:].abs().sum() == 0
    assert logits.grad[1, :2].abs().sum() > 0 and logits.grad[0].abs().sum() > 0


@pytest.mark.slow
def test_a_chunked_run_calls_the_policy_once_per_chunk(tmp_path):
    out = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "dvla_hpc.main", "--out", str(out), "model.action_chunk=4",
                    "run.total_env_steps=1200", "output.record_every=0", "run.progress_bar=false"],
                   cwd=Path(__file__).resolve().parents[1], check=True, capture_output=True, timeout=240)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] >= 1200
    assert summary["lanes"]["sample"]["env_steps"] >= summary["env_steps"]
    # ceil(L / 4) calls for an L-step episode: 7 for 25 steps (0.28), a little more per step on early
    # successes; once per step would be 1.0, once per two steps 0.5
    assert 0.25 <= summary["inference_per_env_step"] <= 0.35
