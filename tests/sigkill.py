"""Kill a real driver process mid-job (SIGKILL: nothing runs at exit) once its file holds a
restart state, for the restart tests of every task."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import h5py

from tests.conftest import ROOT


def stored_step(path: Path, scratch: Path, read_state: Callable) -> int:
    """The step of the state `read_state` finds in a file another process is writing (-1: none yet)."""
    if not path.exists():
        return -1
    try:
        shutil.copyfile(path, scratch)
        with h5py.File(scratch, "r") as f:
            state = read_state(f)
        return state.step if state else -1
    except Exception:  # a copy taken mid-write may be unreadable: try again
        return -1


def sigkill_once_stored(command: Sequence[str], h5: Path, scratch: Path, at_least: int, read_state: Callable,
                        timeout_s: float) -> None:
    """Start `command`, wait until `h5` holds a state at step >= `at_least`, then SIGKILL it."""
    proc = subprocess.Popen(list(command), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while stored_step(h5, scratch, read_state) < at_least:
            assert proc.poll() is None, "driver ended before it could be killed"
            assert time.monotonic() < deadline, f"no stored state after {timeout_s:g} s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
