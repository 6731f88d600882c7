"""What each rank will hold, in bytes, before it allocates any of it; a plan that cannot fit is refused.

Rows (DESIGN.md "Memory"): weights (fp32 master copies: the flat buffers of memory/static_pool.py),
gradients (the learner's flat fp32 gradient buffer), optimizer (Adam: two fp32 moments per
parameter), activations (an estimate, see `training_activation_bytes`), staging (weight holders
keep an active and a staging copy; the learner root an outgoing copy) and slabs (slab pools, their
receive scratch, the inference batch stager and the learner's training arena).

The slab figures use the code's own sizes (Blueprint's layouts and slot counts); where
runtime/assembly.py builds a pool with a literal slot count, the count is repeated here, and
tests/test_memory_plan.py checks every row against the buffers the real code requests. A learn
plan is the learner root's (the one with an outgoing copy). Free memory is read once, when planning:
ranks that share a GPU or a host see the same free bytes, so each must leave room for the others."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

import psutil

from dvla_hpc.model.conv_stack import CONV_STACK, conv_output_size
from dvla_hpc.model.presets import count_parameters
from dvla_hpc.runtime.blueprint import Blueprint

if TYPE_CHECKING:
    import torch

ROWS = ("weights", "gradients", "optimizer", "activations", "staging", "slabs")
ROLES = ("learn", "infer", "sim", "local")
MIB, GIB = 2**20, 2**30
ADAM_BYTES_PER_PARAMETER = 8  # exp_avg + exp_avg_sq, fp32


class PlanRefused(RuntimeError):
    """A rank's memory plan does not fit its device; the message says what to change."""


@dataclass
class MemoryPlan:
    role: str  # "learn", "infer", "sim", "local" (single process: all lanes)
    device: str  # "cpu" or "cuda:N"
    parameters: int  # parameters of the model copies this rank holds (0 on sim ranks)
    rows: dict[str, int]  # bytes per row, wherever they live
    device_bytes: int  # the part that must fit on `device` (everything when it is the CPU)
    host_bytes: int  # the part in host memory apart from `device` (0 when it is the CPU)
    free_bytes: int | None  # free memory of `device` when planned; None = unknown
    host_rows: dict[str, int] = field(default_factory=dict)  # host part of each row (cuda only)
    learners: int = 1

    @property
    def fits(self) -> bool:
        return self.free_bytes is None or self.device_bytes <= self.free_bytes

    @property
    def who(self) -> str:
        return "the single process (local)" if self.role == "local" else f"the {self.role} rank"

    @property
    def model_state_bytes(self) -> int:
        """The learner's master weights, gradients and Adam moments (16 bytes per parameter): what
        FSDP2 would shard over the learners. Master weights and gradients are the same size."""
        return 2 * self.rows["gradients"] + self.rows["optimizer"]

    @property
    def model_state_too_big(self) -> bool:
        return self.free_bytes is not None and self.rows["optimizer"] > 0 \
            and self.model_state_bytes > self.free_bytes

    def format(self) -> str:
        lines = [f"memory plan of {self.who} on {self.device}: {self.parameters:,} parameters",
                 f"  {'row':<12}{'MiB':>14}{'GiB':>10}  where"]
        for row in ROWS:
            total, host = self.rows[row], self.host_rows.get(row, 0)
            where = self.device if host == 0 else "host" if host == total else f"{self.device} + host"
            lines.append(f"  {row:<12}{total / MIB:>14,.1f}{total / GIB:>10,.2f}  {where}")
        lines.append(f"  {'on ' + self.device:<12}{self.device_bytes / MIB:>14,.1f}"
                     f"{self.device_bytes / GIB:>10,.2f}  must fit on {self.device}")
        if self.host_bytes:
            lines.append(f"  {'on host':<12}{self.host_bytes / MIB:>14,.1f}{self.host_bytes / GIB:>10,.2f}")
        if self.free_bytes is None:
            lines.append(f"  free on {self.device}: unknown")
        else:
            verdict = "fits" if self.fits else "DOES NOT FIT"
            lines.append(f"  free on {self.device}: {self.free_bytes / MIB:,.1f} MiB "
                         f"({self.free_bytes / GIB:,.2f} GiB): {verdict}")
        if self.model_state_too_big:
            lines.append(f"  {model_state_note(self)}")
        return "\n".join(lines)


def model_state_note(plan: MemoryPlan) -> str:
    return (f"the learner's weights + gradients + Adam moments alone take {plan.model_state_bytes:,} bytes "
            f"({plan.model_state_bytes / GIB:,.2f} GiB), more than {plan.device} has free; sharding them "
            f"over the {plan.learners} learner(s) (FSDP2) is not built, so more learners will not help")


ROW_KNOBS = {
    "weights": "a smaller model.preset (or model.width / model.depth)",
    "gradients": "a smaller model.preset",
    "optimizer": "a smaller model.preset",
    "staging": "a smaller model.preset",
    "slabs": "fewer pipeline.episode_slots, learn.groups_per_update, env.envs_per_sampler or a "
             "smaller env.image_size",
}
ACTIVATION_KNOBS = {
    "learn": "a smaller learn.minibatch_size, run.autocast_bf16=true on a GPU or a smaller model.preset",
    "infer": "fewer env.envs_per_sampler or a smaller model.preset",
    "local": "a smaller learn.minibatch_size or model.preset",
}


def refuse_if_too_big(plan: MemoryPlan) -> None:
    if plan.fits:
        return
    head = (f"memory plan refused: {plan.who} on {plan.device} needs {plan.device_bytes:,} "
            f"bytes ({plan.device_bytes / GIB:,.2f} GiB) but {plan.free_bytes:,} bytes "
            f"({plan.free_bytes / GIB:,.2f} GiB) are free. ")
    if plan.model_state_too_big:
        raise PlanRefused(head + model_state_note(plan) + f"; choose {ROW_KNOBS['weights']}.\n" + plan.format())
    device_part = {r: plan.rows[r] - plan.host_rows.get(r, 0) for r in ROWS}
    biggest = sorted((r for r in ROWS if device_part[r]), key=device_part.get, reverse=True)[:3]
    advice = "; ".join(f"{r} {device_part[r] / GIB:,.2f} GiB: "
                       f"{ACTIVATION_KNOBS.get(plan.role, '') if r == 'activations' else ROW_KNOBS[r]}"
                       for r in biggest)
    raise PlanRefused(head + f"The largest rows and what shrinks them: {advice}.\n" + plan.format())


def plan_memory(bp: Blueprint, role: str, device: "torch.device | None", samplers: int, learners: int = 1, *,
                infer_ranks: int = 1, bytes_per_activation: int = 4) -> MemoryPlan:
    """The plan of one rank. samplers: the sim ranks it serves (infer: its own sims; learn and
    local: all of them). infer_ranks: the ranks that send the learner episodes (learn only).
    bytes_per_activation: 4 for fp32, 2 under bf16 autocast."""
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if role == "sim":  # sim ranks touch no torch device and import no torch: slabs only
        parts = Parts(on_cpu=True)
        parts.add("slabs", slab_pool_bytes(bp, role, samplers, infer_ranks), host=True)
        return parts.plan(role, None, 0, learners)
    parts = Parts(on_cpu=device.type == "cpu")
    params = count_parameters(bp.cfg.model, bp.spec)
    weight_copy = 4 * params
    trains, serves = role in ("learn", "local"), role in ("infer", "local")
    if trains:
        parts.add("weights", weight_copy)  # the learner's flat master buffer
        parts.add("gradients", weight_copy)
        parts.add("optimizer", ADAM_BYTES_PER_PARAMETER * params)
        parts.add("activations", training_activation_bytes(bp, bp.cfg.learn.minibatch_size, bytes_per_activation))
        if bytes_per_activation < 4:  # autocast caches a bf16 copy of each trainable weight per forward
            parts.add("activations", bytes_per_activation * params)
        parts.add("staging", weight_copy, host=weights_wire_on_host(bp, device))  # WeightPublisher.outgoing
        parts.add("slabs", training_arena_bytes(bp))  # on the learner's device
    if serves:
        parts.add("weights", weight_copy)  # DoubleBufferedWeights: active copy ...
        parts.add("staging", weight_copy)  # ... and staging copy
        if role == "infer" and weights_wire_on_host(bp, device):
            parts.add("staging", weight_copy, host=True)  # roles/infer.py's host landing buffer
        parts.add("activations", inference_activation_bytes(bp, bp.infer_batch, bytes_per_activation))
        parts.add("activations", float_frames_bytes(bp, bp.infer_batch))  # the other copy's FloatFrames
        parts.add("slabs", batch_stager_bytes(bp))  # on the policy's device
    parts.add("slabs", slab_pool_bytes(bp, role, samplers, infer_ranks), host=True)
    return parts.plan(role, device, params, learners)


class Parts:
    def __init__(self, on_cpu: bool):
        self.on_cpu = on_cpu
        self.device_rows = dict.fromkeys(ROWS, 0)
        self.host_rows = dict.fromkeys(ROWS, 0)

    def add(self, row: str, nbytes: int, host: bool = False) -> None:
        (self.host_rows if host and not self.on_cpu else self.device_rows)[row] += int(nbytes)

    def plan(self, role: str, device: "torch.device | None", params: int, learners: int) -> MemoryPlan:
        """device None: the host alone (a sim rank)."""
        rows = {r: self.device_rows[r] + self.host_rows[r] for r in ROWS}
        name = "cpu" if device is None or device.type == "cpu" else f"cuda:{device.index or 0}"
        return MemoryPlan(role=role, device=name, parameters=params, rows=rows,
                          device_bytes=sum(self.device_rows.values()), host_bytes=sum(self.host_rows.values()),
                          free_bytes=free_memory(device), learners=learners,
                          host_rows={r: b for r, b in self.host_rows.items() if b})


def weights_wire_on_host(bp: Blueprint, device: "torch.device") -> bool:
    """roles/tree.py's wire_device: weights travel through host memory when mpi4py carries them
    (the data backend resolves "auto" to torch on a GPU)."""
    return device.type == "cuda" and bp.cfg.planes.data_backend == "mpi"


def slab_pool_bytes(bp: Blueprint, role: str, samplers: int, infer_ranks: int) -> int:
    """Slab pools with runtime/assembly.py's slot counts, plus one receive scratch slab per inbound
    data-plane stream (planes/data_pump.py; roles/*.py open them)."""
    obs, act, ep = bp.obs_layout.nbytes, bp.action_layout.nbytes, bp.episode_layout.nbytes
    if role == "sim":  # sim_ports; actions come in from one infer rank
        return 3 * obs + 3 * act + act
    if role == "infer":  # infer_ports; observations come in from each of its sims
        return 3 * samplers * obs + (2 * samplers + 1) * act + bp.infer_episode_slots(samplers) * ep \
            + samplers * obs
    if role == "learn":  # learn_ports; episodes come in from each infer rank
        return bp.learner_episode_slots(samplers) * ep + infer_ranks * ep
    # local_ports: in-process queues, no data plane
    return 3 * obs + 3 * act + (bp.learner_episode_slots(samplers) + bp.infer_episode_slots(samplers)) * ep


def training_arena_bytes(bp: Blueprint) -> int:
    """TrainingArena's buffers (learn/batch_arena.py) and GRPOLearner's row/advantage indices
    (learn/learner.py): one update's steps, and one minibatch."""
    spec, learn = bp.spec, bp.cfg.learn
    capacity = learn.groups_per_update * learn.group_size * spec.max_episode_steps
    step = math.prod(spec.frames_shape) + 4 * spec.proprio_dim + (8 + 4) * spec.action_dim + 8 + 4
    index = 8 + 4  # row (int64) + advantage (float32)
    words = bp.instruction_tokens.shape[1] * 8
    executed = spec.action_dim  # one bool per action token
    return capacity * (step + index) + learn.minibatch_size * (step + words + index + executed)


def batch_stager_bytes(bp: Blueprint) -> int:
    """lanes/batch_stager.py's buffers (on the policy's device): one policy call's observations."""
    spec, words = bp.spec, bp.instruction_tokens.shape[1]
    return bp.infer_batch * (math.prod(spec.frames_shape) + 4 * spec.proprio_dim + 8 + 8 * words)


def token_count(bp: Blueprint) -> int:
    """Tokens the trunk attends over: action queries + proprio token + instruction tokens + patches."""
    return bp.spec.action_dim + 1 + bp.instruction_tokens.shape[1] + image_patches(bp)


def image_patches(bp: Blueprint) -> int:
    """Patch tokens of all cameras together."""
    import torch

    from dvla_hpc.model.encoders import make_encoder
    with torch.device("meta"):
        return make_encoder(bp.cfg.model, bp.spec.image_shape[0]).num_patches * len(bp.spec.cameras)


def encoder_elements(bp: Blueprint) -> int:
    """Per sample, what the image encoder keeps for backward (at inference, its intermediates
    live no longer, so this bounds its peak there too). film_keypoints, c channels over H*W pixels
    and P patches: 3*H*W (the pixels as floats) + 3*c*H*W (spatial softmax, relu, and the relu's
    copy in patch order) + 2*c*P (patchify, relu) + P*width (projection). conv: each stack
    layer's output, then 2*c*P + P*width likewise.
    Each camera's frame goes through the encoder."""
    m, cameras = bp.cfg.model, len(bp.spec.cameras)
    size = bp.spec.image_shape[0]
    patches = image_patches(bp) // cameras
    if m.encoder == "conv":
        pixels, channels = 0, 3
        for out, kernel, stride in CONV_STACK:
            size = conv_output_size(size, kernel, stride)
            pixels += out * size * size
            channels = out
        return cameras * (pixels + 2 * channels * patches + patches * m.width)
    pixels = size * size
    return cameras * ((3 + 3 * m.encoder_channels) * pixels + 2 * m.encoder_channels * patches
                      + patches * m.width)


def training_activation_bytes(bp: Blueprint, batch: int, bytes_per_activation: int = 4) -> int:
    """One training minibatch: what forward keeps for backward plus one layer's backward working
    set. B = batch, T = `token_count`, w = width, f = ff_mult * w, h = heads, L = depth,
    A = action dims, b = bytes_per_activation:

        B * b * [ (L - 1) * T * (8 w + f)    kept per inner layer: two LayerNorm inputs and outputs,
                                             q/k/v, attention output, feed-forward hidden (attention
                                             scores are not kept: SDPA's fused kernels save a
                                             log-sum-exp, on CPU and CUDA alike)
                  + 4 T w + A * (4 w + f)    the last layer, which runs only the A action queries
                                             (VLAPolicy.attend): its first LayerNorm and k/v span
                                             every token, the rest only the queries
                  + T * (4 w + 2 f) + 2 h T^2  one layer's backward: activation gradients, and
                                             the scores in case attention falls back to the math path
                  + 4 T w                    token assembly (embeddings, positions, concat)
                  + A * (2 w + 2 bins)       final norm and action head
                  + encoder_elements ]       the image encoder (see `encoder_elements`)
        + B * 4 * 3 H W                      the frames as float32 (autocast leaves them fp32;
                                             FloatFrames keeps them between steps)
    """
    m = bp.cfg.model
    t, w, f = token_count(bp), m.width, m.ff_mult * m.width
    a = bp.spec.action_dim
    trunk = ((m.depth - 1) * t * (8 * w + f) + 4 * t * w + a * (4 * w + f)
             + t * (4 * w + 2 * f) + 2 * m.heads * t * t)
    per_sample = trunk + 4 * t * w + a * (2 * w + 2 * m.action_bins) + encoder_elements(bp)
    return batch * bytes_per_activation * per_sample + float_frames_bytes(bp, batch)


def inference_activation_bytes(bp: Blueprint, batch: int, bytes_per_activation: int = 4) -> int:
    """The peak of one no-grad forward: nothing is kept across layers, so the tokens plus one layer's
    working set, B * b * [T * (6 w + f) + h T^2], plus the encoder's intermediates (as in training)."""
    m = bp.cfg.model
    t, w, f = token_count(bp), m.width, m.ff_mult * m.width
    per_sample = t * (6 * w + f) + m.heads * t * t + encoder_elements(bp)
    return batch * bytes_per_activation * per_sample + float_frames_bytes(bp, batch)


def float_frames_bytes(bp: Blueprint, batch: int) -> int:
    """The encoder's reused float32 copy of a batch's frames (model/frames.py), kept between calls."""
    return batch * 4 * math.prod(bp.spec.frames_shape)


def free_memory(device: "torch.device | None") -> int | None:
    """Free bytes of `device`: the CUDA driver's count (torch, else NVML); the host's available memory."""
    if device is None or device.type != "cuda":
        return psutil.virtual_memory().available
    import torch
    try:
        return torch.cuda.mem_get_info(device)[0]
    except (RuntimeError, AssertionError):
        return nvml_free(device.index or 0)


def nvml_free(index: int) -> int | None:
    """NVML numbers the physical GPUs; CUDA_VISIBLE_DEVICES maps torch's index onto them."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    if index < len(visible) and visible[index].strip().isdigit():
        index = int(visible[index])
    try:
        import pynvml
        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).free
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML, no driver or no such device: the free memory is unknown
        return None
