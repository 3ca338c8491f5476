"""SIGTERM and SIGINT (Slurm preemption, Ctrl-C) as a stop request that jobs honour at safe points.

Raising KeyboardInterrupt straight from a signal handler lands wherever the interpreter happens
to be: inside a library's `__del__` or a garbage-collection callback the exception is printed
and swallowed, and the run carries on as if nothing happened. So while a job runs, the handler
only records the request; the job checks it between MD steps (where a checkpoint can be written)
and raises KeyboardInterrupt itself. Outside jobs (model loading, set-up) and on a second signal
the handler raises at once. A repeat that arrives within REPEAT_WINDOW_S of the first is the same
request, not a second one: Slurm signals every process of a step, and mpiexec and Apptainer
forward the signal too, so one preemption can reach a rank twice within milliseconds.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator

REPEAT_WINDOW_S = 2.0

_requested: int | None = None
_requested_at = 0.0
_deferring = 0  # blocks inside `deferred()`, over all threads
_lock = threading.Lock()


def _on_signal(signum: int, frame) -> None:
    global _requested, _requested_at
    if _deferring and _requested is None:
        _requested, _requested_at = signum, time.monotonic()
        return
    if _deferring and time.monotonic() - _requested_at < REPEAT_WINDOW_S:
        return  # the same stop request delivered twice (launcher and Slurm both forward it)
    raise KeyboardInterrupt


_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def install() -> dict:
    """Route SIGTERM and SIGINT through the stop request (main thread only, as Python requires).
    Returns the handlers it replaced, for `restore`."""
    reset()
    previous = {signum: signal.getsignal(signum) for signum in _SIGNALS}
    for signum in _SIGNALS:
        signal.signal(signum, _on_signal)
    return previous


def restore(previous: dict) -> None:
    """Put back the handlers `install` replaced (an in-process caller keeps its own)."""
    for signum, handler in previous.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block a signal only sets the request; the code inside checks it at its safe
    points, and the caller checks it after the block (`raise_if_requested`)."""
    global _deferring
    with _lock:
        _deferring += 1
    try:
        yield
    finally:
        with _lock:
            _deferring -= 1


def stop_requested() -> bool:
    return _requested is not None


def raise_if_requested() -> None:
    """Turn a recorded stop request into KeyboardInterrupt. The request stays, so that every
    replica of a batched run (driver.replicas, one thread each) stops, and the run after it."""
    if _requested is not None:
        raise KeyboardInterrupt


def reset() -> None:
    """Forget a pending request (tests, and a library caller that handled it)."""
    global _requested
    _requested = None
