"""Progress lines with an ETA, for logs that Slurm keeps (no terminal control characters)."""

from __future__ import annotations

import logging
import time


class Progress:
    """Logs `label: step i/n (p%) ... ETA` about every tenth of a run; in parallel runs only
    rank 0 logs INFO to the terminal (driver.parallel), every rank to its own log file."""

    def __init__(self, log: logging.Logger, label: str, total: int, start: int = 0, reports: int = 10):
        self.log, self.label, self.total, self.start = log, label, total, start
        self.every = max(1, total // reports)
        self.started = time.perf_counter()
        self.next_report = start

    def update(self, done: int, details: str = "") -> None:
        if done < self.next_report:
            return
        self.next_report = (done // self.every + 1) * self.every
        elapsed = time.perf_counter() - self.started
        rate = (done - self.start) / elapsed if elapsed > 0 and done > self.start else None
        eta = f"ETA {format_duration((self.total - done) / rate)}" if rate else "ETA --"
        percent = 100.0 * done / self.total if self.total else 100.0
        self.log.info("%s: step %d/%d (%.0f%%) %s  %s", self.label, done, self.total, percent, details, eta)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
