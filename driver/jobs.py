"""A job of a run: one variant (raw or corrected) of the task, at one temperature where the task
has several. Each task kind plans its jobs (driver.tasks.Task.plan); the runner asks it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    name: str
    variant: str  # "raw" or "corrected"
    temperature_K: float | None = None
