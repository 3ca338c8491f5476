"""Fault injection for the crash tests: `DRIVER_FAULT_AT=<site>:<n>[:enospc]`.

The process SIGKILLs itself (nothing runs at exit, as after the scheduler's kill -9 or a node
failure) at the n-th pass through the named write site, or with `:enospc` raises the full disk's
OSError there instead. Several faults may be given, separated by commas. The sites are the
moments where a kill could leave something half-written (SITES); tests/test_faults.py kills
every task kind at each of them and requires `driver run --resume` to reach the uninterrupted
run's results. Unset (every production run), `at` costs one dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import signal

from driver.errors import InputError

ENV = "DRIVER_FAULT_AT"
SITES = {
    "journal.record": "half of a journal record written (the record every change to a job file makes first)",
    "h5.frame": "inside a frame's HDF5 writes: the clock extended, the values not yet",
    "h5.flush": "just before HDF5 flushes a job file (frames since the last flush only in its cache)",
    "h5.tree": "inside a checkpoint's, a finished point's or a result's HDF5 writes, half the datasets written",
    "h5.close": "a job's end: its summary entry written, its status and the final flush not yet",
    "journal.remove": "a finished job's file closed whole, its journal not yet removed",
    "recover": "`--resume` rebuilding a job file from its journal, half the records replayed",
    "summary": "summary.json written to its temporary name, not yet renamed",
}
_passes: dict[str, int] = {}
_plan: dict[str, tuple[int, str]] | None = None


def _parse() -> dict[str, tuple[int, str]]:
    plan: dict[str, tuple[int, str]] = {}
    for item in filter(None, os.environ.get(ENV, "").split(",")):
        site, _, rest = item.partition(":")
        count, _, action = rest.partition(":")
        if site not in SITES or not count.isdigit() or action not in ("", "kill", "enospc"):
            raise InputError(f"{ENV}={item!r}: expected <site>:<n>[:enospc] with a site of {', '.join(SITES)}")
        plan[site] = (int(count), action or "kill")
    return plan


def check() -> None:
    """Parse DRIVER_FAULT_AT now (the command line's start), so a mistake is an InputError."""
    global _plan
    _plan = _parse()


def at(site: str) -> None:
    """A pass through write site `site`: kill this process or fail its write here if asked to."""
    global _plan
    if _plan is None:
        _plan = _parse()
    if site not in _plan:
        return
    _passes[site] = _passes.get(site, 0) + 1
    count, action = _plan[site]
    if _passes[site] != count:
        return
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    os.kill(os.getpid(), signal.SIGKILL)
