"""Progress lines: every tenth of a stage, and at least every interval even when the count does
not move (a relaxation that may stop early), with an ETA; the bar only on a terminal."""

from __future__ import annotations

import io
import logging

import pytest

from driver import progress as progress_module
from driver.progress import Progress, format_duration


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(progress_module.time, "perf_counter", fake)
    return fake


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "test.progress"]


def test_reports_every_tenth_with_eta(caplog, clock):
    log = logging.getLogger("test.progress")
    caplog.set_level(logging.INFO, logger="test.progress")
    progress = Progress(log, "md", 100, interval_s=1e9, bar=False)
    for step in range(1, 101):
        clock.now = step * 0.5
        progress.update(step, "T=300 K")
    lines = _lines(caplog)
    assert len(lines) == 11  # the first step says the stage has started, then every tenth
    assert lines[0] == "md: step 1/100 (1%) T=300 K  ETA 50s"
    assert lines[1] == "md: step 10/100 (10%) T=300 K  ETA 45s"
    assert lines[-1].startswith("md: step 100/100 (100%)")


def test_reports_at_least_every_interval(caplog, clock):
    log = logging.getLogger("test.progress")
    caplog.set_level(logging.INFO, logger="test.progress")
    progress = Progress(log, "relaxation", 10_000, interval_s=5.0, unit="iteration", bar=False)
    for step in range(1, 31):  # 30 steps of 1 s each, far below a tenth of 10 000
        clock.now = float(step)
        progress.update(step, f"fmax={1.0 / step:.3f} eV/Å")
    progress.finish("converged")
    lines = _lines(caplog)
    assert [line.split(" (")[0] for line in lines[:-1]] == [f"relaxation: iteration {n}/10000" for n in (1, 6, 11, 16, 21, 26)]
    assert lines[-1] == "relaxation: done, 30 iterations in 30s converged"


def test_interval_from_environment(monkeypatch):
    monkeypatch.setenv("DRIVER_PROGRESS_S", "2.5")
    assert Progress(logging.getLogger("x"), "a", 10, bar=False).interval_s == 2.5
    monkeypatch.setenv("DRIVER_PROGRESS_S", "soon")
    assert Progress(logging.getLogger("x"), "a", 10, bar=False).interval_s == progress_module.DEFAULT_INTERVAL_S


def test_bar_drawn_on_a_terminal_only(monkeypatch, clock):
    stream = io.StringIO()
    monkeypatch.setattr(progress_module.sys, "stderr", stream)
    Progress(logging.getLogger("x"), "neb", 4).update(1)  # StringIO is not a terminal
    assert stream.getvalue() == ""
    clock.now = 1.0
    Progress(logging.getLogger("x"), "neb", 4, bar=True).update(2)
    assert "neb [" in stream.getvalue() and "2/4" in stream.getvalue()


def test_format_duration():
    assert [format_duration(s) for s in (5, 65, 3700)] == ["5s", "1m05s", "1h01m"]
