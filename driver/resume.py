"""`driver run --resume`: what each job's file on disk says about where that job stands.

A job's HDF5 file is the only record a killed run leaves (summary.json is written at the end),
so the decision is taken from it alone: finished jobs are skipped and reported from the entry
stored in their file; unfinished jobs continue from what their task stored (MD: the newest valid
checkpoint; point-wise tasks: the points they finished, driver.points); anything else starts again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py

from driver.errors import InputError, first_line
from driver.recipe import Recipe
from driver.results import FINISHED, JobStatus
from driver.tasks import task_for


@dataclass
class JobOnDisk:
    action: str  # "run" (from the start), "skip" (finished) or "continue" (from `state`)
    entry: dict | None = None  # the finished job's summary entry
    state: object = None  # Task.resume_state's answer: has `step` and `frames`


def recipe_fingerprint(recipe: Recipe) -> str:
    """The recipe as the driver understood it (defaults filled in), for comparison on resume."""
    return recipe.model_dump_json()


def _first_difference(stored: object, current: object, prefix: str = "") -> str:
    if isinstance(stored, dict) and isinstance(current, dict):
        for key in sorted(set(stored) | set(current)):
            found = _first_difference(stored.get(key), current.get(key), f"{prefix}{key}.")
            if found:
                return found
        return ""
    return prefix.rstrip(".") if stored != current else ""


def job_on_disk(path: Path, recipe: Recipe) -> JobOnDisk:
    """Where the job whose file is `path` stands; bad or foreign files are input errors."""
    if not path.exists():
        return JobOnDisk("run")
    try:
        with h5py.File(path, "r") as f:
            status = str(f.attrs.get("status", JobStatus.RUNNING))
            stored = f["parameters"].attrs.get("recipe_fingerprint") if "parameters" in f else None
            if stored is None:
                raise InputError(f"{path}: not written by this driver's run of a recipe (no recipe_fingerprint); "
                                 "run with --overwrite or another --out")
            may_change = task_for(recipe.task.kind).resume_may_change
            stored_recipe, current_recipe = json.loads(stored), json.loads(recipe_fingerprint(recipe))
            for recipe_dict in (stored_recipe, current_recipe):
                for name in may_change:
                    recipe_dict.get("task", {}).pop(name, None)
            field = _first_difference(stored_recipe, current_recipe)
            if field:
                raise InputError(f"{path}: written by a different recipe ({field} differs); --resume needs the "
                                 "recipe that started the run (or use --overwrite)")
            if status in FINISHED:
                entry = json.loads(f.attrs["summary_entry"]) if "summary_entry" in f.attrs else None
                entry = entry or {"job": path.stem, "file": path.name, "status": status}
                task = task_for(recipe.task.kind)
                if f"results/{task.kind}" in f:  # the result as stored, through its type (as compare reads it)
                    entry.update(task.result.from_h5(f[f"results/{task.kind}"]).scalars())
                return JobOnDisk("skip", entry=entry)
            state = task_for(recipe.task.kind).resume_state(f, recipe.task)
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: cannot be read to resume ({first_line(exc)}); "
                         "delete it or run with --overwrite") from None
    return JobOnDisk("continue", state=state) if state is not None else JobOnDisk("run")
