"""The lanes as SimGrid actors: samplers, inference servers, learner replicas and the weight tree.

Each actor follows its lane's loop in dvla_hpc (see docs/architecture.md, "The swimlane"); messages
carry the sizes the data plane sends. SimGrid runs one actor at a time, so they share `Job` freely."""
from __future__ import annotations

from dataclasses import dataclass, field

from dvla_hpc.planes.backoff import FIRST_SLEEP_S

from .platform import FLOPS
from .scenario import Scenario

CONTROL_BYTES = 64  # a control-plane message (version announcement)


@dataclass
class Obs:
    sampler: int
    half: int
    rows: int
    steps: int  # env steps per row that this slab stands for (the model's message granularity)
    ends_episode: bool  # the slab closes an episode (the infer lane ships it to a learner)
    wants_action: bool
    round: int  # sync mode: the version the infer lane must hold before serving it


@dataclass
class Action:
    half: int


@dataclass
class Wake:
    version: int


@dataclass
class Episodes:
    rows: int
    steps: int  # env steps per episode
    version: int  # the policy version that produced them


@dataclass
class Landed:
    version: int


@dataclass
class Job:
    """What the actors share, and what the run reports."""
    sc: Scenario
    hosts: dict
    version: int = 0  # the learners' latest version
    episodes_started: int = 0
    episodes_closed: int = 0  # by the infer lanes, in the order they reach the learners
    episodes_consumed: int = 0  # by completed updates (trained or dropped as stale)
    update_episodes: int = 0  # consumed by the replicas in the update under way
    trained_steps: int = 0  # by completed updates
    update_steps: int = 0  # trained by the replicas in the update under way
    dropped_steps: int = 0
    admitted_steps: int = 0  # of episodes the learners received (the run's env-step count)
    admitted_at: tuple | None = None  # (clock, admitted_steps) when they first reach the budget
    produced_steps: int = 0
    broadcast_in_flight: bool = False
    versions_skipped: int = 0
    parked: list = field(default_factory=list)  # inboxes of samplers with a half waiting for a credit
    busy: dict = field(default_factory=lambda: {"sample": 0.0, "infer": 0.0, "learn": 0.0, "allreduce": 0.0,
                                                "data_plane": 0.0, "idle": 0.0})
    broadcast_s: list = field(default_factory=list)
    lags: list = field(default_factory=list)
    staged: dict = field(default_factory=dict)  # infer rank -> newest version landed there
    pump_active: dict = field(default_factory=dict)  # rank -> when its pump last moved a message
    versions_at: list = field(default_factory=list)  # (clock, trained_steps) at each new version
    end_s: float | None = None

    def host_of(self, rank: int):
        return self.hosts[self.sc.placement.node_of[rank]]

    def may_start(self, episodes: int) -> bool:
        """Flow control (lanes/flow_credit.py): at most `budget` groups untrained at any time."""
        w = self.sc.workload
        untrained = self.episodes_started - self.episodes_consumed
        return untrained + episodes <= w.flow_budget_groups * w.group_size


def work(sg, job: Job, lane: str, seconds: float, on_gpu: bool) -> None:
    """Counted when done, so work still running at the end does not count."""
    if on_gpu:
        sg.this_actor.sleep_for(seconds)  # a dedicated device: no sharing with CPU lanes
    else:
        sg.this_actor.execute(seconds * FLOPS)
    job.busy[lane] += seconds


def inbox(sg, kind: str, rank: int):
    return sg.Mailbox.by_name(f"{kind}{rank}")


def my_inbox(sg, kind: str, rank: int):
    """This actor's mailbox, with itself as permanent receiver: a message starts moving when it is
    sent (as into MPI's pre-posted receives), not when the receiver next asks for it."""
    box = inbox(sg, kind, rank)
    box.set_receiver(sg.Actor.self())
    return box


def send(sg, job: Job, sender: int, kind: str, rank: int, payload, size: float) -> None:
    """A data-plane or control send that the sender does not wait for."""
    job.pump_active[sender] = sg.Engine.clock
    inbox(sg, kind, rank).put_init(payload, max(int(size), 1)).detach()


def backoff_overshoot(gap: float, max_sleep: float) -> float:
    """How late a poller that went idle `gap` seconds before a message arrived wakes to find it:
    planes/backoff.py sleeps 50 us, doubling up to `max_sleep`, then `max_sleep` each time."""
    t, sleep = 0.0, FIRST_SLEEP_S
    while sleep < max_sleep and t < gap:
        t, sleep = t + sleep, min(2 * sleep, max_sleep)
    if t < gap:
        t += -(-(gap - t) // max_sleep) * max_sleep
    return t - gap


def receive(sg, job: Job, poller, box, max_sleep: float):
    """The next message, noticed as late as its polling thread (`poller`: a rank's data pump, or
    ("tree", rank)) would notice it."""
    waited_from = max(sg.Engine.clock, job.pump_active.get(poller, 0.0))
    msg = box.get()
    gap = sg.Engine.clock - waited_from
    if gap > 0:
        sg.this_actor.sleep_for(backoff_overshoot(gap, max_sleep))
    job.pump_active[poller] = sg.Engine.clock
    return msg


def idle_load(sg, job: Job, share: float, period: float = 0.05) -> None:
    """A rank's cost while it waits (pump polls, lane timeouts): `share` of a core, in slices."""
    while True:
        job.busy["idle"] += share * period
        sg.this_actor.execute(share * period * FLOPS)
        sg.this_actor.sleep_for(period * (1 - share))


def sampler(sg, job: Job, rank: int) -> None:
    """Steps its envs in halves (async) or all together (sync), ships observations, applies actions."""
    sc, w = job.sc, job.sc.workload
    k, t_max = sc.steps_per_message, w.max_episode_steps
    rows = [w.envs_per_sampler] if sc.mode == "sync" else [w.envs_per_sampler // 2] * 2
    served_by = sc.placement.infer_for_sim[rank]
    step_in_episode = [0] * len(rows)
    rounds = [0] * len(rows)
    parked: set[int] = set()
    me = my_inbox(sg, "sim", rank)

    def ship(half: int, ends: bool, act: bool) -> None:
        send(sg, job, rank, "infer", served_by, Obs(rank, half, rows[half], k, ends, act, rounds[half]),
             rows[half] * k * w.obs_bytes)

    def start(half: int) -> None:
        """A new episode for the half, if flow control lets it start (sync: the round's budget)."""
        if sc.mode == "sync" or job.may_start(rows[half]):
            job.episodes_started += rows[half]
            parked.discard(half)
            ship(half, False, True)
            return
        parked.add(half)
        if me not in job.parked:
            job.parked.append(me)

    for half in range(len(rows)):
        start(half)
    while True:
        msg = receive(sg, job, rank, me, sc.network.pump_max_sleep_s)
        if isinstance(msg, Wake):
            for half in sorted(parked):
                start(half)
            continue
        half = msg.half
        work(sg, job, "data_plane", sc.data_plane.sim_per_slab, on_gpu=False)
        work(sg, job, "sample", sc.lanes.sample * rows[half] * k, on_gpu=False)
        job.produced_steps += rows[half] * k
        step_in_episode[half] += k
        if step_in_episode[half] < t_max:
            ship(half, False, True)
            continue
        step_in_episode[half] = 0
        ship(half, True, False)  # the last observation closes the episode
        rounds[half] += 1
        start(half)


def infer(sg, job: Job, rank: int) -> None:
    """Serves observation slabs one at a time, returns actions, ships finished episodes to learners;
    in sync mode holds a slab until its round's weights have landed."""
    sc, w = job.sc, job.sc.workload
    learners = sc.placement.learners
    me = my_inbox(sg, "infer", rank)
    active, held = 0, []

    def serve(obs: Obs) -> None:
        work(sg, job, "data_plane", sc.data_plane.infer_per_slab, on_gpu=False)
        if obs.wants_action:
            work(sg, job, "infer", sc.lanes.infer * obs.rows * obs.steps, on_gpu=sc.gpu_lanes)
            send(sg, job, rank, "sim", obs.sampler, Action(obs.half), obs.rows * obs.steps * w.action_bytes)
        if obs.ends_episode:
            # One message per GRPO group (or per slab when a slab holds less than a group); groups go
            # round-robin over the learner replicas, so each gets its share of every update.
            per_message = min(obs.rows, w.group_size)
            for _ in range(obs.rows // per_message):
                learner = learners[job.episodes_closed // w.group_size % len(learners)]
                job.episodes_closed += per_message
                send(sg, job, rank, "learn", learner, Episodes(per_message, w.max_episode_steps, active),
                     per_message * w.max_episode_steps * w.episode_bytes_per_step)

    while True:
        msg = receive(sg, job, rank, me, sc.network.pump_max_sleep_s)
        if isinstance(msg, Landed):
            active = msg.version
            ready = [o for o in held if o.round <= active]
            held = [o for o in held if o.round > active]
            for obs in ready:
                serve(obs)
            continue
        if sc.mode == "sync" and msg.round > active:
            held.append(msg)
            continue
        if sc.mode == "async":  # between batches, a swap to the newest staged version
            active = max(active, job.staged.get(rank, 0))
        serve(msg)


def ring_allreduce_s(sc: Scenario) -> float:
    """Ring allreduce of the flat gradient over the learner replicas (computed, not simulated; see
    docs in BENCHMARKS.md): 2 (L - 1) steps of 1/L of the buffer each."""
    n = len(sc.placement.learners)
    if n == 1:
        return 0.0
    net = sc.network
    return 2 * (n - 1) * (sc.workload.weight_bytes / n / net.bandwidth_Bps + 2 * net.latency_s)


def learner(sg, job: Job, rank: int, barrier) -> None:
    """Gathers its share of episodes, trains them (dropping any older than max_policy_lag), agrees with
    the other replicas (allreduce), bumps the version; the root publishes it."""
    sc, w = job.sc, job.sc.workload
    replicas = len(sc.placement.learners)
    share = w.groups_per_update * w.group_size // replicas
    is_root = rank == sc.placement.learners[0]
    me = my_inbox(sg, "learn", rank)
    while True:
        got, trained = 0, 0
        while got < share:
            ep = receive(sg, job, rank, me, sc.network.pump_max_sleep_s)
            got += ep.rows
            job.update_episodes += ep.rows
            job.admitted_steps += ep.rows * ep.steps
            if job.admitted_at is None and job.admitted_steps >= sc.total_env_steps:
                job.admitted_at = (sg.Engine.clock, job.admitted_steps)  # where a real run stops
            lag = job.version - ep.version
            if lag > w.max_policy_lag:
                job.dropped_steps += ep.rows * ep.steps
            else:
                trained += ep.rows * ep.steps
                job.lags.append(lag)
        work(sg, job, "learn", sc.lanes.learn * trained, on_gpu=sc.gpu_lanes)
        job.update_steps += trained
        barrier.wait()
        if replicas > 1:
            seconds = ring_allreduce_s(sc)
            sg.this_actor.sleep_for(seconds)
            job.busy["allreduce"] += seconds
        barrier.wait()
        if not is_root:
            continue
        job.version += 1
        job.trained_steps += job.update_steps
        job.episodes_consumed += job.update_episodes
        job.update_steps = job.update_episodes = 0
        job.versions_at.append((sg.Engine.clock, job.trained_steps))
        publish(sg, job)
        if job.trained_steps >= sc.total_env_steps:
            job.end_s = sg.Engine.clock
            return


def publish(sg, job: Job) -> None:
    """The root hands the version to the tree (skipped while one still travels) and announces it."""
    if job.broadcast_in_flight:
        job.versions_skipped += 1
    else:
        job.broadcast_in_flight = True
        root = job.sc.placement.learners[0]
        send(sg, job, root, "tree", root, job.version, CONTROL_BYTES)
    waiting, job.parked = job.parked, []
    for box in waiting:
        box.put_init(Wake(job.version), CONTROL_BYTES).detach()


def tree_member(sg, job: Job, rank: int, links, versions: int | None = None) -> None:
    """Moves each version (all, or the first `versions`) down the tree in chunks, forwarding a chunk
    as soon as it lands (planes/broadcast_tree.py); an infer rank then stages it. Chunks to one child
    go one after another, as MPI's messages between a pair do; children are served side by side."""
    sc = job.sc
    chunk_bytes = max(int(sc.workload.weight_bytes / sc.broadcast_chunks), 1)
    me = my_inbox(sg, "tree", rank)
    poller = ("tree", rank)
    for _ in iter(int, 1) if versions is None else range(versions):
        if links.parent is None:
            version = receive(sg, job, poller, me, sc.network.tree_max_sleep_s)
            began = sg.Engine.clock
        sending = []
        for _ in range(sc.broadcast_chunks):
            if links.parent is not None:
                version, began = receive(sg, job, poller, me, sc.network.tree_max_sleep_s)
            sg.Comm.wait_all(sending)
            sending = [inbox(sg, "tree", child).put_async((version, began), chunk_bytes)
                       for child in links.children]
        if links.parent is not None:
            job.staged[rank] = version
            job.broadcast_s.append((version, sg.Engine.clock - began))
            if sc.mode == "sync":
                send(sg, job, rank, "infer", rank, Landed(version), CONTROL_BYTES)
        sg.Comm.wait_all(sending)
        if links.parent is None:
            job.broadcast_in_flight = False
