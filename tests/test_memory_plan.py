import dataclasses
from collections import Counter

import pytest
import torch

from dvla_hpc.config.loader import load_config
from dvla_hpc.lanes.distribute import WeightPublisher
from dvla_hpc.memory.accounting import DATA_PATH
from dvla_hpc.memory.plan import (ROWS, PlanRefused, plan_memory, refuse_if_too_big,
                                  training_activation_bytes)
from dvla_hpc.model.vla import PolicyBatch
from dvla_hpc.runtime import assembly
from dvla_hpc.runtime.blueprint import Blueprint

CPU = torch.device("cpu")


@pytest.fixture
def tiny() -> Blueprint:
    return Blueprint.from_config(load_config())


@pytest.fixture
def requests(monkeypatch) -> Counter:
    """Bytes of every data-path buffer requested while the test runs, by buffer name."""
    asked: Counter = Counter()
    count = DATA_PATH._count

    def recording(name, nbytes, on_device):
        asked[name] += nbytes
        count(name, nbytes, on_device)

    monkeypatch.setattr(DATA_PATH, "_count", recording)
    return asked


def total(asked: Counter, *prefixes: str) -> int:
    return sum(n for name, n in asked.items() if name.startswith(prefixes))


def test_local_plan_equals_what_the_real_buffers_request(tiny, requests):
    bp = tiny
    plan = plan_memory(bp, "local", CPU, samplers=1)
    _, infer_ports, _ = assembly.local_ports(bp)  # what runtime/local_run.py builds
    learner = assembly.build_learner(bp, CPU)
    holder = assembly.weight_holder(bp, CPU, learner.version)
    assembly.infer_lanes(bp, holder, infer_ports, 0, assembly.Signals.new())
    WeightPublisher(learner.flat)
    assert plan.rows["slabs"] == total(requests, "slabs/", "arena/")
    assert plan.rows["weights"] + plan.rows["staging"] == total(requests, "weights")
    assert plan.rows["gradients"] == requests["gradients"] == 4 * plan.parameters
    assert plan.rows["optimizer"] == 8 * plan.parameters
    assert plan.device_bytes == sum(plan.rows.values()) and plan.host_bytes == 0


def test_rank_plans_equal_the_ports_their_roles_build(tiny, requests):
    """Slab pools as roles/*.py build them, plus one receive scratch slab per inbound stream."""
    bp = tiny
    obs, act, ep = bp.obs_layout.nbytes, bp.action_layout.nbytes, bp.episode_layout.nbytes
    built = {}
    for role, build, scratch in [("sim", lambda: assembly.sim_ports(bp), act),
                                 ("infer", lambda: infer_rank(bp), 3 * obs),
                                 ("learn", lambda: (assembly.learn_ports(bp, 3), assembly.build_learner(bp, CPU)),
                                  2 * ep)]:
        requests.clear()
        build()
        built[role] = total(requests, "slabs/", "arena/") + scratch
    assert plan_memory(bp, "sim", CPU, samplers=1).rows["slabs"] == built["sim"]
    assert plan_memory(bp, "infer", CPU, samplers=3).rows["slabs"] == built["infer"]
    assert plan_memory(bp, "learn", CPU, samplers=3, infer_ranks=2).rows["slabs"] == built["learn"]


def infer_rank(bp: Blueprint) -> None:
    """An infer rank's ports and lane, as roles/infer.py builds them."""
    holder = assembly.weight_holder(bp, CPU, 0)
    assembly.infer_lanes(bp, holder, assembly.infer_ports(bp, 3), 0, assembly.Signals.new())


def test_sim_plan_holds_slabs_only_on_the_cpu(tiny):
    plan = plan_memory(tiny, "sim", torch.device("cuda", 0), samplers=1)
    assert plan.device == "cpu" and plan.parameters == 0
    assert [row for row in ROWS if plan.rows[row]] == ["slabs"]


def test_gpu_plan_keeps_slab_pools_on_the_host(tiny):
    plan = plan_memory(tiny, "learn", torch.device("cuda", 0), samplers=2)
    pool = (tiny.learner_episode_slots(2) + 1) * tiny.episode_layout.nbytes
    assert plan.device == "cuda:0"
    assert plan.host_bytes == pool == plan.host_rows["slabs"]
    assert plan.device_bytes + plan.host_bytes == sum(plan.rows.values())
    mpi = Blueprint.from_config(load_config(None, ["planes.data_backend=mpi"]))
    infer = plan_memory(mpi, "infer", torch.device("cuda", 0), samplers=2)
    assert infer.host_rows["staging"] == 4 * infer.parameters  # the landing buffer mpi4py receives into
    assert infer.rows["staging"] == 2 * infer.host_rows["staging"]


def test_bf16_halves_activations_but_caches_bf16_weights(tiny):
    fp32 = plan_memory(tiny, "learn", CPU, samplers=1)
    bf16 = plan_memory(tiny, "learn", CPU, samplers=1, bytes_per_activation=2)
    assert fp32.rows["activations"] / 2 < bf16.rows["activations"] < fp32.rows["activations"]
    assert bf16.rows["activations"] >= 2 * bf16.parameters


def saved_activation_bytes(bp: Blueprint, batch: int) -> int:
    """Bytes autograd keeps for backward after one forward (weights excluded, shared storage once)."""
    model = bp.initial_policy().train()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    spec = bp.spec
    images = torch.randint(0, 256, (batch, *spec.frames_shape), dtype=torch.uint8)
    words = bp.instruction_tokens[torch.arange(batch) % len(bp.instruction_tokens)]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(PolicyBatch(images, torch.randn(batch, spec.proprio_dim), words))
    return sum(kept.values())


@pytest.mark.parametrize("overrides", [[], ["model.preset=small", "model.encoder=conv", "env.image_size=96"]])
def test_activation_estimate_bounds_what_autograd_keeps(overrides):
    bp = Blueprint.from_config(load_config(None, overrides))
    estimate, kept = training_activation_bytes(bp, 8), saved_activation_bytes(bp, 8)
    assert kept <= estimate <= 1.5 * kept, f"estimate {estimate:,} vs kept {kept:,}"


def test_plan_bigger_than_free_memory_is_refused_with_both_byte_counts(tiny):
    plan = plan_memory(tiny, "local", CPU, samplers=1)
    refuse_if_too_big(dataclasses.replace(plan, free_bytes=plan.device_bytes))
    short = dataclasses.replace(plan, free_bytes=plan.device_bytes - 1)
    assert not short.fits
    with pytest.raises(PlanRefused) as refused:
        refuse_if_too_big(short)
    message = str(refused.value)
    assert "single process (local) on cpu" in message
    assert f"{plan.device_bytes:,} bytes" in message and f"{plan.device_bytes - 1:,} bytes" in message
    assert "learn.minibatch_size" in message  # activations dominate the tiny plan


def test_model_state_that_cannot_fit_one_device_names_fsdp2():
    bp = Blueprint.from_config(load_config(None, ["model.preset=7b"]))
    plan = dataclasses.replace(plan_memory(bp, "learn", torch.device("cuda", 0), samplers=4, learners=8),
                               free_bytes=80 * 2**30)
    assert plan.rows["optimizer"] == 8 * plan.parameters and not plan.fits
    with pytest.raises(PlanRefused, match=r"8 learner\(s\) \(FSDP2\) is not built") as refused:
        refuse_if_too_big(plan)
    assert "model.preset" in str(refused.value)
    assert "FSDP2" in plan.format()


def test_format_names_every_row_in_mib_and_gib(tiny):
    text = plan_memory(tiny, "local", CPU, samplers=1).format()
    for row in ROWS:
        assert f"  {row} " in text
    assert "MiB" in text and "GiB" in text and "fits" in text
