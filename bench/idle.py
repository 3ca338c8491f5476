"""Wait for the machine to be quiet before a timed run: on a shared 2-core machine another
process (a test suite) halves the cores available and turns ratios into noise."""

from __future__ import annotations

import os
import sys
import time


def busy_fraction(interval: float = 1.0) -> float:
    """Fraction of all CPUs' time spent busy over `interval` seconds (Linux /proc/stat), by any
    process; call it while this process itself is idle."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    total0, idle0 = sample()
    time.sleep(interval)
    total1, idle1 = sample()
    total = total1 - total0
    return 0.0 if total <= 0 else 1.0 - (idle1 - idle0) / total


def wait_until_quiet(threshold: float = 0.2, max_wait_s: float | None = None, poll_s: float = 5.0) -> float:
    """Block until less than `threshold` of the CPUs is busy (at most `max_wait_s`, default
    $BENCH_MAX_WAIT_S or 300); returns the seconds waited. Without /proc/stat (not Linux)
    returns at once."""
    if not os.path.exists("/proc/stat"):
        return 0.0
    if max_wait_s is None:
        max_wait_s = float(os.environ.get("BENCH_MAX_WAIT_S", "300"))
    started = time.monotonic()
    warned = False
    while True:
        busy = busy_fraction()
        waited = time.monotonic() - started
        if busy < threshold:
            return waited
        if waited >= max_wait_s:
            print(f"warning: CPUs still {busy:.0%} busy after waiting {waited:.0f} s; timing anyway "
                  "(numbers will be noisy)", file=sys.stderr, flush=True)
            return waited
        if not warned:
            print(f"CPUs {busy:.0%} busy with other processes: waiting for them (up to {max_wait_s:.0f} s)",
                  file=sys.stderr, flush=True)
            warned = True
        time.sleep(poll_s)


def _busy_and_own_seconds() -> tuple[float, float]:
    """(seconds all CPUs spent busy since boot incl. steal, CPU seconds of this process and its
    waited-for descendants)."""
    import resource

    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    own = sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                   resource.getrusage(resource.RUSAGE_CHILDREN)))
    return busy, own


def guarded(fn, max_foreign_cores: float = 0.1, tries: int = 4):
    """Run `fn` until no other process competed for the CPUs while it ran: the CPU time others
    used (all busy time, hypervisor steal included, minus this process's and its children's)
    must average under `max_foreign_cores` cores. Between tries, waits for a quiet machine.
    Returns (fn's result, foreign cores of the kept try, tries used); the last try is kept
    whatever its load (with a warning) so a busy machine slows the benchmark, never stops it."""
    if not os.path.exists("/proc/stat"):
        return fn(), None, 1
    for attempt in range(1, tries + 1):
        wait_until_quiet()
        busy0, own0 = _busy_and_own_seconds()
        start = time.monotonic()
        result = fn()
        elapsed = time.monotonic() - start
        busy1, own1 = _busy_and_own_seconds()
        foreign = max(0.0, (busy1 - busy0) - (own1 - own0)) / max(elapsed, 1e-9)
        if foreign < max_foreign_cores:
            return result, round(foreign, 3), attempt
        print(f"  other processes used {foreign:.2f} cores during this run; "
              f"{'repeating it' if attempt < tries else 'keeping it anyway (noisy)'}", file=sys.stderr, flush=True)
    return result, round(foreign, 3), tries
