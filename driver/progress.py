"""Progress of every slow stage: log lines with counts, details and an ETA, at a steady rate, for
logs that Slurm keeps (no terminal control characters); and a one-line bar on stderr where stderr
is a terminal."""

from __future__ import annotations

import logging
import os
import sys
import time

DEFAULT_INTERVAL_S = 30.0  # DRIVER_PROGRESS_S overrides: at most this long between two log lines
BAR_REFRESH_S = 0.2


def progress_interval_s() -> float:
    try:
        return max(0.0, float(os.environ.get("DRIVER_PROGRESS_S", DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


class Progress:
    """Logs `label: step i/n (p%) details ETA` about every tenth of a stage and at least every
    `interval_s` seconds (so a stage of unknown length, a relaxation that may stop early, still
    says what it is doing); `total` is the most the stage can take (max_steps for a relaxation,
    so its ETA is an upper bound). In parallel runs only rank 0 logs INFO to the terminal
    (driver.parallel), every rank to its own log file."""

    def __init__(self, log: logging.Logger, label: str, total: int, start: int = 0, reports: int = 10,
                 interval_s: float | None = None, unit: str = "step", bar: bool | None = None):
        self.log, self.label, self.total, self.start, self.unit = log, label, total, start, unit
        self.every = max(1, total // reports)
        self.interval_s = progress_interval_s() if interval_s is None else interval_s
        self.started = self.last_report = time.perf_counter()
        self.next_report = start
        self.bar = _stderr_is_terminal() if bar is None else bar
        self.last_bar = 0.0
        self.done = start

    def update(self, done: int, details: str = "") -> None:
        self.done = done
        now = time.perf_counter()
        if self.bar and now - self.last_bar >= BAR_REFRESH_S:
            self.last_bar = now
            _draw_bar(self.label, done, self.total, self.eta(done, now))
        if done < self.next_report and now - self.last_report < self.interval_s:
            return
        self.next_report = (done // self.every + 1) * self.every
        self.last_report = now
        percent = 100.0 * done / self.total if self.total else 100.0
        if self.bar:
            _clear_bar()
        self.log.info("%s: %s %d/%d (%.0f%%) %s  %s", self.label, self.unit, done, self.total, percent,
                      details, self.eta(done, now))

    def eta(self, done: int, now: float | None = None) -> str:
        elapsed = (time.perf_counter() if now is None else now) - self.started
        rate = (done - self.start) / elapsed if elapsed > 0 and done > self.start else None
        return f"ETA {format_duration((self.total - done) / rate)}" if rate else "ETA --"

    def finish(self, details: str = "") -> None:
        """The stage's last line (clears the bar), whatever the reporting schedule said."""
        if self.bar:
            _clear_bar()
        elapsed = time.perf_counter() - self.started
        self.log.info("%s: done, %d %ss in %s %s", self.label, self.done - self.start, self.unit,
                      format_duration(elapsed), details)


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):
        return False


def _draw_bar(label: str, done: int, total: int, eta: str, width: int = 30) -> None:
    filled = int(width * min(1.0, done / total)) if total else width
    sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {eta}\033[K")
    sys.stderr.flush()


def _clear_bar() -> None:
    sys.stderr.write("\r\033[K")
    sys.stderr.flush()


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
