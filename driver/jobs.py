"""Jobs of a run: each task kind plans them (driver.tasks); variants are raw and/or corrected."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from driver.recipe import Recipe


@dataclass(frozen=True)
class Job:
    name: str
    variant: str  # "raw" or "corrected"
    temperature_K: float | None = None


def variants(recipe: Recipe) -> list[str]:
    if recipe.correction is None:
        return ["raw"]
    return ["raw", "corrected"] if recipe.compare else ["corrected"]


def plan_jobs(recipe: Recipe) -> list[Job]:
    from driver.tasks import task_for

    return task_for(recipe.task.kind).plan(recipe.task, variants(recipe))
