"""Fixtures shared by the test files."""

import os
import signal
import threading
import time

import pytest

from fastbp import _dispatch


@pytest.fixture
def interrupt_after():
    """interrupt_after(seconds) sends this process SIGINT (Ctrl-C) from another thread after
    `seconds`, and returns a function that gives the time since the signal was sent."""
    def start(seconds):
        sent = []

        def send():
            time.sleep(seconds)
            sent.append(time.perf_counter())
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=send, daemon=True).start()
        return lambda: time.perf_counter() - sent[0]
    return start


@pytest.fixture(params=_dispatch.available_targets())
def target(request):
    """Each SIMD target this CPU runs, made the active one for the test."""
    before = _dispatch.current_target()
    _dispatch.use_target(request.param)
    yield request.param
    _dispatch.use_target(before)
