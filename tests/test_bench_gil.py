"""The GIL contention benchmark times the infer lane beside a learner that really runs."""
from __future__ import annotations

import json

import pytest

from dvla_hpc.bench import gil_contention

TINY = ["env.image_size=16", "model.patch_size=8", "env.envs_per_sampler=4", "env.workers_per_sampler=0",
        "env.max_episode_steps=25", "learn.group_size=2", "learn.groups_per_update=1"]


@pytest.mark.timeout(240)
def test_infer_is_timed_alone_beside_a_learner_thread_and_beside_a_learner_process(tmp_path):
    assert gil_contention.main(["--config", "configs/quickstart.yaml", "--out", str(tmp_path),
                                "--seconds", "0.5", *TINY]) == 0
    found = json.loads((tmp_path / "gil_contention.json").read_text())
    assert set(found["runs"]) == {"alone", "learner thread", "learner process"}
    for run in found["runs"].values():
        assert run["infer_steps"] > 0 and run["infer_ms_per_step"] > 0
        assert run["learn_steps"] % 25 == 0 and run["learn_steps"] > 0  # whole episodes, trained
    thread, process = found["runs"]["learner thread"], found["runs"]["learner process"]
    assert found["infer_cost_of_shared_gil"] == pytest.approx(
        thread["infer_ms_per_step"] / process["infer_ms_per_step"] - 1)


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the planted failure
def test_a_learner_that_dies_before_it_is_warm_is_reported_at_once(monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("planted learner failure")

    monkeypatch.setattr(gil_contention, "learn_cost", broken)
    cfg = gil_contention.load_config("configs/quickstart.yaml", TINY)
    with pytest.raises(RuntimeError, match="the learner thread ended before it was warm"):
        gil_contention.beside_thread(cfg, gil_contention.Blueprint.from_config(cfg), 0.5)
