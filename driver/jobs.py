"""Expand a recipe into named jobs: variants (raw / corrected) x temperatures."""

from __future__ import annotations

from dataclasses import dataclass

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
    jobs = []
    for variant in variants(recipe):
        if recipe.task.kind == "md":
            for temperature in recipe.task.temperatures_K:
                jobs.append(Job(f"{variant}-T{temperature:g}K", variant, temperature))
        else:
            jobs.append(Job(variant, variant))
    return jobs
