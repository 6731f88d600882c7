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
