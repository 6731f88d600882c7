"""The learner's preallocated arena: gathers the right samples and allocates nothing once warm."""
from __future__ import annotations

import numpy as np
import torch

from dvla_hpc.config.schema import Config
from dvla_hpc.learn.batch_arena import TrainingArena
from dvla_hpc.learn.learner import GRPOLearner
from dvla_hpc.memory.accounting import DATA_PATH, RssTrack, trend_growth
from dvla_hpc.memory.layouts import H, SlabKind, episode_layout, stamp
from dvla_hpc.memory.slab_pool import SlabPool
from dvla_hpc.runtime.blueprint import Blueprint


def small_config() -> Config:
    cfg = Config()
    cfg.env.image_size, cfg.model.patch_size = 16, 8
    cfg.learn.group_size, cfg.learn.groups_per_update, cfg.learn.minibatch_size = 2, 2, 16
    cfg.learn.advantage = "process"
    return cfg


def filled_episodes(bp: Blueprint, lengths: list[int], seed: int = 0) -> SlabPool:
    rng = np.random.default_rng(seed)
    pool = SlabPool(episode_layout(bp.spec), len(lengths))
    for view, t in zip(pool.slots, lengths):
        stamp(view["header"], SlabKind.EPISODE)
        view["header"][H.COUNT] = t
        view["header"][H.TASK] = rng.integers(len(bp.spec.instructions))
        view["image"][:] = rng.integers(0, 255, view["image"].shape, dtype=np.uint8)
        view["proprio"][:] = rng.normal(size=view["proprio"].shape)
        view["tokens"][:] = rng.integers(0, bp.bins.bins, view["tokens"].shape)
        view["logp"][:] = rng.normal(size=view["logp"].shape)
        view["reward"][:] = rng.uniform(size=view["reward"].shape)
    return pool


def test_minibatch_gathers_exactly_the_requested_steps():
    bp = Blueprint.from_config(small_config())
    pool = filled_episodes(bp, [5, 25, 1, 12])
    arena = TrainingArena(bp.spec, 4, 16, bp.instruction_tokens)
    starts = [arena.load(view) for view in pool.slots]
    wanted = [(1, 24), (0, 0), (3, 11), (2, 0), (1, 3)]
    rows = torch.tensor([starts[e] + s for e, s in wanted])
    batch, tokens, logp, executed = arena.minibatch(rows)
    assert executed is None  # no action chunks: every action ran
    for i, (e, s) in enumerate(wanted):
        ep = pool.slots[e]
        assert np.array_equal(batch.images[i].numpy(), ep["image"][s])
        assert np.array_equal(batch.proprio[i].numpy(), ep["proprio"][s])
        assert np.array_equal(tokens[i].numpy(), ep["tokens"][s])
        assert np.array_equal(logp[i].numpy(), ep["logp"][s])
        assert torch.equal(batch.instruction_tokens[i], bp.instruction_tokens[int(ep["header"][H.TASK])])
    arena.clear()
    assert arena.load(pool.slots[2]) == 0


def test_learner_updates_allocate_no_data_path_buffer_after_warmup():
    cfg = small_config()
    bp = Blueprint.from_config(cfg)
    learner = GRPOLearner(cfg.learn, bp.initial_policy(), bp.instruction_tokens, bp.spec, 0)
    pool = filled_episodes(bp, [25, 9, 17, 25])
    groups = [pool.slots[:2], pool.slots[2:]]
    before = learner.flat.clone()
    assert learner.update(groups).samples == 25 + 9 + 17 + 25
    DATA_PATH.seal()
    try:
        for view in pool.slots:
            view["version"][:] = learner.version
        learner.update(groups)
        assert DATA_PATH.report()["allocations_after_warmup"] == 0
        assert not torch.equal(before, learner.flat)  # it trained
        SlabPool(episode_layout(bp.spec), 1)  # a late pool is exactly what the count must catch
        assert DATA_PATH.report()["allocated_after_warmup_by"] == {"slabs/episode": 1}
    finally:
        DATA_PATH.sealed = False
        DATA_PATH.after_warmup.clear()


def test_rss_growth_is_the_trend_from_the_warm_mark():
    track = RssTrack()
    track.samples = [(0.0, 50.0), (1.0, 100.0)]  # start-up, then the warm mark
    track.mark_warm()
    noisy_but_flat = [101, 99, 100, 102, 98, 100, 101, 99, 100, 99, 150]  # one spike at the end
    track.samples += [(2.0 + i, float(m)) for i, m in enumerate(noisy_but_flat)]
    report = track.report()
    assert report["rss_mib_at_warmup"] == 100.0 and report["rss_warm_t"] == 1.0
    assert report["rss_growth_after_warmup"] == 0.0
    assert report["rss_mib_timeline"][-1] == (12.0, 150.0)
    assert trend_growth([100.0, 100.0, 100.0, 120.0, 150.0, 150.0, 150.0, 150.0]) == 0.5  # a real rise


def test_the_learner_anchors_its_clip_at_the_policy_that_began_the_update():
    cfg = small_config()
    assert cfg.learn.clip_against == "behaviour"  # the default: no proximal log-probs kept
    bp = Blueprint.from_config(cfg)
    assert GRPOLearner(cfg.learn, bp.initial_policy(), bp.instruction_tokens, bp.spec, 0).proximal is None
    cfg.learn.clip_against = "proximal"
    learner = GRPOLearner(cfg.learn, bp.initial_policy(), bp.instruction_tokens, bp.spec, 0)
    pool = filled_episodes(bp, [25, 9, 17, 25])
    loaded = learner.load([pool.slots[:2], pool.slots[2:]])
    rows = learner.rows[: loaded.samples]
    batch, tokens, _, _ = learner.arena.minibatch(rows[:16])
    with torch.no_grad():
        want = torch.log_softmax(learner.model(batch), -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(learner.proximal[:16], want)


class ThreadReplicas:
    """Two learner replicas in one process, one thread each: the agreement and the gradient sum
    of `LearnerReplicas`, over a barrier instead of MPI."""

    def __init__(self, shared: dict, rank: int, size: int):
        self.shared, self.rank, self.size = shared, rank, size
        self.is_root = rank == 0

    def _exchange(self, key: str, value):
        self.shared.setdefault(key, [None] * self.size)[self.rank] = value
        self.shared["barrier"].wait()
        values = list(self.shared[key])
        self.shared["barrier"].wait()
        return values

    def agree(self, stopping, samples, counts, by_sampler=None):
        from dvla_hpc.learn.replicas import Agreement
        samples_by_rank = self._exchange("samples", samples)
        return Agreement(stop=any(self._exchange("stop", stopping)), samples=samples_by_rank,
                         totals={k: sum(c[k] for c in self._exchange("counts", counts)) for k in counts},
                         by_sampler=np.zeros(0, dtype=np.int64))

    def sum_gradients(self, flat_grad):
        total = sum(self._exchange("grad", flat_grad.clone()))
        flat_grad.copy_(total)

    def check_identical(self, flat, version):
        pass


def test_uneven_replicas_take_the_step_one_learner_takes_on_all_their_samples():
    """One optimiser step over every sample (minibatch >= all of them): two replicas holding
    96 and 10 samples end with the weights of one learner that holds all 106."""
    import threading
    cfg = small_config()
    cfg.learn.groups_per_update, cfg.learn.epochs, cfg.learn.minibatch_size = 4, 1, 512
    cfg.learn.max_grad_norm = 1e9  # no clipping: it would see the norm of a partial sum
    bp = Blueprint.from_config(cfg)
    pool = filled_episodes(bp, [25, 24, 25, 22, 3, 2, 4, 1])
    for view in pool.slots:
        view["version"][:] = 0
    groups = [pool.slots[i: i + 2] for i in range(0, 8, 2)]

    single = GRPOLearner(cfg.learn, bp.initial_policy(), bp.instruction_tokens, bp.spec, 0)
    start = single.flat.clone()
    assert single.update(groups).samples == 106
    shared = {"barrier": threading.Barrier(2)}
    replicas = [GRPOLearner(cfg.learn, bp.initial_policy(), bp.instruction_tokens, bp.spec, 0,
                            replicas=ThreadReplicas(shared, rank, 2)) for rank in (0, 1)]
    threads = [threading.Thread(target=replica.update, args=(groups[2 * i: 2 * i + 2],))
               for i, replica in enumerate(replicas)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert shared["samples"] == [96, 10]
    assert not torch.equal(start, single.flat)
    torch.testing.assert_close(replicas[0].flat, replicas[1].flat, rtol=0, atol=0)
    # the step's gradient is the mean over all 106 samples, as the single learner's (summation
    # order differs); Adam's first step is about lr * sign(gradient), so near-zero entries may
    # differ by a fraction of lr
    torch.testing.assert_close(replicas[0].flat_grad, single.flat_grad, rtol=1e-3, atol=1e-7)
    torch.testing.assert_close(replicas[0].flat, single.flat, rtol=0, atol=1e-4)


def learner_and_two_groups():
    """A fresh learner, and a pool of four episodes in two groups of two (slots 0-1, 2-3)."""
    cfg = small_config()
    bp = Blueprint.from_config(cfg)
    learner = GRPOLearner(cfg.learn, bp.initial_policy(), bp.instruction_tokens, bp.spec, 0)
    pool = filled_episodes(bp, [25, 9, 17, 25])
    for slot, view in enumerate(pool.slots):
        view["header"][H.GROUP] = slot // 2
    return cfg, bp, learner, pool


def test_the_learn_lane_frees_an_updates_slots_before_it_trains_and_trains_on_their_copies():
    import threading

    from dvla_hpc.lanes.lane import SlotQueue
    from dvla_hpc.lanes.learn import LearnLane

    cfg, bp, learner, pool = learner_and_two_groups()
    retired: list[int] = []
    seen_at_optimize: list[list[int]] = []
    optimize = learner.optimize

    def optimize_after_scribbling(loaded, agreed):
        seen_at_optimize.append(list(retired))
        for view in pool.slots:  # the pool reuses retired slots while the update trains
            view["image"][:] = 0
            view["logp"][:] = 0
        return optimize(loaded, agreed)

    learner.optimize = optimize_after_scribbling
    stop, failed = threading.Event(), threading.Event()
    lane = LearnLane(learner, pool, SlotQueue(4, "in"), None, retired.append, lambda record: None,
                     cfg.learn, stop, failed, sampler_ids=[0])
    for slot in range(4):
        lane.admit(slot)
    reference = GRPOLearner(cfg.learn, bp.initial_policy(), bp.instruction_tokens, bp.spec, 0)
    unscribbled = filled_episodes(bp, [25, 9, 17, 25])
    reference.update([unscribbled.slots[:2], unscribbled.slots[2:]])
    assert lane.train(lane.complete[:2])
    assert seen_at_optimize == [[0, 1, 2, 3]]
    assert torch.equal(learner.flat, reference.flat)  # trained on the arena's copies, not the reused slots


def test_a_stopped_learn_lane_finishes_its_update_however_long_it_takes(monkeypatch):
    """Other lanes get a bounded time to finish; the learn lane's update in progress always
    completes, so the final checkpoint never races it (a big model's update outlasts any bound)."""
    import threading
    import time

    from dvla_hpc.lanes.lane import Lane, SlotQueue
    from dvla_hpc.lanes.learn import LearnLane

    monkeypatch.setattr(Lane, "finish_timeout_s", 0.2)
    cfg, bp, learner, pool = learner_and_two_groups()
    optimizing, optimize = threading.Event(), learner.optimize

    def slow_optimize(loaded, agreed):
        optimizing.set()
        time.sleep(1.5)
        return optimize(loaded, agreed)

    learner.optimize = slow_optimize
    stop, failed = threading.Event(), threading.Event()
    inbox = SlotQueue(4, "in")
    lane = LearnLane(learner, pool, inbox, None, lambda slot: None, lambda record: None,
                     cfg.learn, stop, failed, sampler_ids=[0])
    for slot in range(4):
        inbox.put_nowait(slot)
    lane.start()
    assert optimizing.wait(30)
    stop.set()
    lane.finish()
    assert not lane.is_alive() and learner.version == 1 and lane.error is None


def test_the_learn_lane_checkpoints_on_its_schedule_and_reports_how_many_and_how_long():
    import threading
    import time

    from dvla_hpc.lanes.lane import SlotQueue
    from dvla_hpc.lanes.learn import CheckpointSchedule, LearnLane
    from dvla_hpc.runtime.reports import LaneReport

    cfg, bp, learner, pool = learner_and_two_groups()
    written: list[int] = []

    def checkpoint():
        time.sleep(0.05)
        written.append(learner.version)

    lane = LearnLane(learner, pool, SlotQueue(4, "in"), None, lambda slot: None, lambda record: None,
                     cfg.learn, threading.Event(), threading.Event(), sampler_ids=[0],
                     checkpoint=checkpoint, checkpoint_schedule=CheckpointSchedule(2, 0))
    for _ in range(5):
        assert lane.train([[0, 1], [2, 3]])
    assert written == [2, 4]
    counters = LaneReport.from_message(lane.report().to_message(rank=0)).counters
    assert counters["checkpoints"] == 2 and 100 <= counters["checkpoint_ms"] < 1000
