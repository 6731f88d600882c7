"""The infer lane merges the observation slabs queued together into one policy call, while their
envs fit `pipeline.infer_max_batch`, and books every row back to its own sampler and episode."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dvla_hpc.config.loader import load_config
from dvla_hpc.memory.layouts import H, SlabKind, stamp
from dvla_hpc.model.vla import PolicyBatch
from dvla_hpc.runtime import assembly
from dvla_hpc.runtime.blueprint import Blueprint

HALF = 4  # envs_per_sampler 8


def infer_rank(max_batch: int, samplers: int = 3, device: torch.device = torch.device("cpu")):
    bp = Blueprint.from_config(load_config(None, ["env.image_size=16", "env.envs_per_sampler=8",
                                                  f"pipeline.infer_max_batch={max_batch}"]))
    ports = assembly.infer_ports(bp, samplers)
    holder = assembly.weight_holder(bp, device, 0)
    policy = bp.initial_policy().to(device)
    holder.load_initial(torch.nn.utils.parameters_to_vector(policy.parameters()), 0)
    [lane] = assembly.infer_lanes(bp, holder, ports, 0, assembly.Signals.new())
    return bp, ports, lane, policy


def queue_slab(ports, rng, sampler: int, half: int, round_: int = 0) -> int:
    slot = ports.obs_pool.acquire()
    obs = ports.obs_pool.slots[slot]
    stamp(obs["header"], SlabKind.OBSERVATIONS)
    obs["header"][H.SAMPLER], obs["header"][H.HALF] = sampler, half
    obs["header"][H.COUNT], obs["header"][H.ROUND] = HALF, round_
    obs["env_ids"][:HALF] = np.arange(HALF) + half * HALF
    obs["image"][:] = rng.integers(0, 255, obs["image"].shape, dtype=np.uint8)
    obs["proprio"][:] = rng.normal(size=obs["proprio"].shape)
    obs["task"][:] = rng.integers(0, 2, obs["task"].shape)
    obs["group"][:], obs["done"][:] = 0, False
    assert ports.obs_in.put_nowait(slot)
    return slot


def answered(ports) -> dict[tuple[int, int], np.ndarray]:
    out = {}
    while (slot := ports.action_out.get_nowait()) is not None:
        view = ports.action_pool.slots[slot]
        n = int(view["header"][H.COUNT])
        out[int(view["header"][H.SAMPLER]), int(view["header"][H.HALF])] = view["action"][:n].copy()
        ports.action_pool.release(slot)
    return out


def test_queued_slabs_share_a_policy_call_and_keep_their_rows():
    bp, ports, lane, policy = infer_rank(max_batch=2 * HALF)
    rng = np.random.default_rng(0)
    sent = [(0, 0), (1, 0), (2, 1)]
    slabs = {key: {k: v.copy() for k, v in ports.obs_pool.slots[queue_slab(ports, rng, *key)].items()}
             for key in sent}
    assert lane.serve_backlog()
    assert lane.policy_calls == 2  # two slabs fit one call; the third needs another
    assert lane.observations == 3 * HALF and not lane.backlog
    actions = answered(ports)
    assert set(actions) == set(sent)
    episodes = lane.assembler.open
    assert len(episodes) == 3 * HALF
    for (sampler, half), obs in slabs.items():
        assert np.array_equal(actions[sampler, half], bp.bins.to_actions(
            torch.from_numpy(np.stack([ports.episode_pool.slots[episodes[sampler, env]]["tokens"][0]
                                       for env in obs["env_ids"][:HALF]]))).numpy())
        # each episode's first step holds its own env's image, and the log-probability of its
        # token under the policy, recomputed for that slab alone
        batch = PolicyBatch(torch.from_numpy(obs["image"][:HALF]), torch.from_numpy(obs["proprio"][:HALF]),
                            bp.instruction_tokens[torch.from_numpy(obs["task"][:HALF]).long()])
        with torch.no_grad():
            logp_all = torch.log_softmax(policy(batch).float(), dim=-1).numpy()
        for j, env in enumerate(obs["env_ids"][:HALF]):
            step = ports.episode_pool.slots[episodes[sampler, int(env)]]
            assert np.array_equal(step["image"][0], obs["image"][j])
            expected = logp_all[j, np.arange(bp.spec.action_dim), step["tokens"][0]]
            np.testing.assert_allclose(step["logp"][0], expected, rtol=1e-4, atol=1e-5)


def test_one_slab_a_call_when_the_batch_holds_one_half():
    _, ports, lane, _ = infer_rank(max_batch=1)  # below a half-batch: a half always fits
    rng = np.random.default_rng(1)
    for key in [(0, 0), (1, 0), (2, 0)]:
        queue_slab(ports, rng, *key)
    assert lane.serve_backlog()
    assert lane.policy_calls == 3 and lane.observations == 3 * HALF


def test_a_slab_waits_for_its_round_while_others_are_served():
    """Sync mode: a slab of round 1 stays in the backlog until weights one version newer arrive;
    the round-0 slabs queued with it are served meanwhile, in one call."""
    _, ports, lane, policy = infer_rank(max_batch=4 * HALF)
    rng = np.random.default_rng(2)
    queue_slab(ports, rng, 0, 0)
    late = queue_slab(ports, rng, 1, 0, round_=1)
    queue_slab(ports, rng, 2, 0)
    assert lane.serve_backlog()
    assert lane.policy_calls == 1 and lane.observations == 2 * HALF and lane.backlog == [late]
    assert set(answered(ports)) == {(0, 0), (2, 0)}
    staging = lane.weights.staging_buffer(timeout=1.0)
    staging.copy_(torch.nn.utils.parameters_to_vector(policy.parameters()))
    lane.weights.mark_staged(1)
    assert lane.serve_backlog()
    assert lane.policy_calls == 2 and not lane.backlog and set(answered(ports)) == {(1, 0)}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_policy_call_on_a_gpu_does_not_queue_behind_the_default_streams_work():
    """In one process the learner's kernels go on the default stream; the infer lane's own stream
    lets a policy call run while they are still queued."""
    device = torch.device("cuda", 0)
    _, ports, lane, _ = infer_rank(max_batch=2 * HALF, device=device)
    rng = np.random.default_rng(0)
    queue_slab(ports, rng, 0, 0)
    assert lane.serve_backlog() and answered(ports)  # warm: cuDNN's first call, lazy modules
    queue_slab(ports, rng, 1, 0)
    torch.cuda._sleep(2_000_000_000)  # about a second of GPU time on the default stream
    assert lane.serve_backlog() and answered(ports)
    assert not torch.cuda.default_stream(device).query(), "the policy call waited for the default stream"
