"""A task kind in one module, as CONTRIBUTING.md's checklist adds one: the largest force on the
structure and its energy per atom. Registered by the tests that use it
(driver.tasks.register(TASK)); nothing else in the driver names it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from driver.correction import expected_ratio
from driver.results import TaskResult, array, scalar
from driver.schema import Strict
from driver.tasks import Task


class MaxForceTask(Strict):
    """`task: {kind: max_force}`: nothing to set."""

    kind: Literal["max_force"]


@dataclass
class MaxForceResult(TaskResult):
    kind: ClassVar[str] = "max_force"
    max_force_eV_A: float = scalar("eV Angstrom-1")
    energy_per_atom_eV: float = scalar("eV")
    forces_eV_A: np.ndarray = array("eV Angstrom-1")


class MaxForceTaskKind(Task[MaxForceTask, MaxForceResult]):
    kind = "max_force"
    spec = MaxForceTask
    result = MaxForceResult

    def run(self, context) -> MaxForceResult:
        forces = context.atoms.get_forces()
        return MaxForceResult(max_force_eV_A=float(np.linalg.norm(forces, axis=1).max()),
                              energy_per_atom_eV=float(context.atoms.get_potential_energy()) / len(context.atoms),
                              forces_eV_A=forces)

    def report_line(self, entry: dict, result: MaxForceResult) -> str:
        return f"  {entry['file']:<24} max |F| {result.max_force_eV_A:.4f} eV/Å, E/atom {result.energy_per_atom_eV:.4f} eV"

    def comparison_line(self, name: str, raw: MaxForceResult, corrected: MaxForceResult,
                        scale: float | None) -> str | None:
        expected = expected_ratio("energy", scale)  # forces are energy gradients: 1/s as well
        if expected is None:
            return None
        return (f"  max_force: corrected/raw = {corrected.max_force_eV_A / raw.max_force_eV_A:.6f} "
                f"(exact for the scalar correction: 1/s = {expected:.6f})")


TASK = MaxForceTaskKind()
