"""Signals become a stop request: SIGTERM (a scheduler's, which SLURM sends twice) always asks for
a clean stop; only a second Ctrl-C stops at once."""
from __future__ import annotations

import os
import signal

import pytest

from dvla_hpc.runtime.signals import StopRequest


@pytest.fixture
def stop_request():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    request = StopRequest()
    request.install()
    yield request
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_sigterm_asks_for_a_clean_stop_however_often_it_comes(stop_request):
    assert not stop_request
    for _ in range(3):
        os.kill(os.getpid(), signal.SIGTERM)
    assert stop_request and stop_request.signal_name == "SIGTERM"


def test_a_second_ctrl_c_stops_at_once(stop_request):
    os.kill(os.getpid(), signal.SIGINT)
    assert stop_request and stop_request.signal_name == "SIGINT"
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
