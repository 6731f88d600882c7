"""SilenceWatch: the rank silent longest past the timeout is named; a word from it resets it."""
from __future__ import annotations

import pytest

from dvla_hpc.roles.watchdog import RankSilent, SilenceWatch


def test_silence_past_the_timeout_names_the_rank():
    now = [100.0]
    watch = SilenceWatch([1, 2, 3], 5.0, lambda rank: f"rank {rank} (sim) on host h{rank}", lambda: now[0])
    now[0] += 4.0
    watch.heard(1)
    watch.heard(3)
    watch.check()
    now[0] += 1.5
    with pytest.raises(RankSilent, match=r"rank 2 \(sim\) on host h2 has sent nothing for 5.5 s"):
        watch.check()
    watch.heard(2)
    watch.check()
    watch.heard(7)  # not watched: ignored
    assert 7 not in watch.last_heard


def test_timeout_zero_never_fires():
    now = [0.0]
    watch = SilenceWatch([0], 0.0, str, lambda: now[0])
    now[0] += 1e9
    watch.check()
