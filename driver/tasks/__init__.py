"""Tasks: each turns atoms with any ASE calculator attached into frames and results.

A task module exposes `run(context: JobContext) -> dict`: it streams what it produces through
`context.writer`, stores its results under /results/<kind>, and returns the headline numbers
that go into summary.json. No task knows which model or correction it runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ase import Atoms
from ase.calculators.calculator import Calculator

from driver.checkpoint import MDState
from driver.jobs import Job
from driver.models import LoadedModel
from driver.output import H5MDWriter
from driver.recipe import Recipe

Share = Callable[[Callable[[list], list], Sequence], list]


def evaluate_here(evaluate: Callable[[list], list], items: Sequence) -> list:
    """A job run by one rank evaluates all its structures itself."""
    return evaluate(list(items))


_TASK_MODULES = {"md": "driver.tasks.md", "phonons": "driver.tasks.phonons", "neb": "driver.tasks.neb"}


@dataclass
class JobContext:
    job: Job
    recipe: Recipe
    atoms: Atoms  # the starting structure, with `calculator` attached
    calculator: Calculator  # raw model, or the softening correction wrapping it
    writer: H5MDWriter
    out_dir: Path
    reference_energy_eV: float
    model: LoadedModel  # for batched evaluation of many structures per call
    softening_scale: float | None  # None for raw jobs
    prepared: dict = field(default_factory=dict)  # what the task's prepare() built (e.g. NEB endpoints)
    resume: MDState | None = None  # `driver run --resume`: the checkpoint this job continues from
    share: Share = evaluate_here  # run.share_structures: World.map_shared, the ranks evaluate together


def task_module(kind: str):
    return importlib.import_module(_TASK_MODULES[kind])


def task_runner(kind: str) -> Callable[[JobContext], dict]:
    return task_module(kind).run
