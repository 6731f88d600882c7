"""Malformed control messages, slab headers and sizes, and weight-tree headers are refused with an
error naming their sender, every time (the counts `bench faults --only messages` reports)."""
from __future__ import annotations

from dvla_hpc.bench import message_fuzz


def test_every_fuzzed_message_is_refused_naming_its_sender():
    counts = message_fuzz.fuzz_messages(trials=300, seed=3)
    assert {c.target for c in counts} == set(message_fuzz.TARGETS)
    for count in counts:
        assert count.refused == count.trials == 300 and count.survived, count


def test_a_guard_that_lets_a_message_through_is_counted(monkeypatch):
    monkeypatch.setattr(message_fuzz, "validate", lambda *args: None)
    slab = [c for c in message_fuzz.fuzz_messages(trials=50) if c.target == "data slab"]
    assert sum(c.accepted for c in slab) == 150 and not all(c.survived for c in slab)
