"""Stop requests: a signal during a job is recorded, not raised; a repeat of it within the
window (Slurm and mpiexec both forward one preemption) is the same request; a later one raises."""

from __future__ import annotations

import os
import signal

import pytest

from driver import interrupt


@pytest.fixture
def installed():
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    interrupt.install()
    yield
    interrupt.reset()
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def test_signal_in_a_job_is_a_request_and_a_quick_repeat_is_the_same_request(installed):
    with interrupt.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        assert interrupt.stop_requested()
        os.kill(os.getpid(), signal.SIGTERM)  # forwarded again by the launcher: no exception yet
        assert interrupt.stop_requested()
        with pytest.raises(KeyboardInterrupt):
            interrupt.raise_if_requested()


def test_a_later_second_signal_raises_at_once(installed, monkeypatch):
    with interrupt.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        monkeypatch.setattr(interrupt, "_requested_at", interrupt._requested_at - interrupt.REPEAT_WINDOW_S - 1)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the user insists: stop now


def test_outside_a_job_a_signal_raises_at_once(installed):
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
