"""The one relaxation helper every task uses: positions, or positions and cell, on whatever
potential the atoms carry (the job's own surface), in a world of one (parallel.serial_comm).
ASE does the work (its optimizers, FrechetCellFilter, FixSymmetry); this module only chooses
them from a recipe and reports progress the way MD does."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from ase import Atoms, units
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS, FIRE, LBFGS
from pydantic import Field

from driver.observers import StepObservers
from driver.optimizer_state import restore_optimizer_state
from driver.parallel import serial_comm
from driver.progress import Progress
from driver.schema import Bool, Strict, bounded

log = logging.getLogger(__name__)

OPTIMIZERS = {"fire": FIRE, "bfgs": BFGS, "lbfgs": LBFGS}
Optimizer = Literal["fire", "bfgs", "lbfgs"]


class RelaxSpec(Strict):
    """Relaxation of positions (cell fixed) before dynamics."""

    fmax_eV_A: bounded(gt=0, le=100, unit="eV/Å") = Field(0.05, description="converged when every force is below this")
    max_steps: bounded(int, ge=1, le=10**7) = Field(
        200, description="FIRE steps at most; unconverged, MD starts from the last structure")


class CellRelaxSpec(Strict):
    """Relaxation of positions and, by default, the cell (FIRE on ASE's FrechetCellFilter)."""

    fmax_eV_A: bounded(gt=0, le=100, unit="eV/Å") = Field(
        0.01, description="converged when every force (and, with relax_cell, the cell's stress x volume) is below this")
    max_steps: bounded(int, ge=1, le=10**7) = Field(
        500, description="FIRE steps at most; unconverged, the task goes on from the last structure")
    relax_cell: Bool = Field(True, description="relax the cell too (ASE's FrechetCellFilter); false: positions only")


@dataclass(frozen=True)
class Relaxation:
    converged: bool
    steps: int
    fmax_eV_A: float = float("nan")  # the largest force (generalised, with the cell) at the end

    def describe(self) -> str:
        state = "converged" if self.converged else "NOT converged"
        return f"{state} after {self.steps} steps (fmax {self.fmax_eV_A:.4f} eV/Å)"


def relax(atoms: Atoms, fmax_eV_A: float, max_steps: int, cell: bool = False, label: str = "relaxation",
          optimizer: Optimizer = "fire", pressure_GPa: float = 0.0, symmetry: bool = False,
          observers: StepObservers | None = None, first_step: int = 0,
          restart: Mapping[str, np.ndarray] | None = None, orig_cell: np.ndarray | None = None,
          on_start: Callable[[object], None] | None = None) -> Relaxation:
    """Relax `atoms` in place (it must carry its calculator) until every force (and, with `cell`,
    the stress times the volume, against `pressure_GPa`) is below fmax or `max_steps` are taken.
    `symmetry`: ASE's FixSymmetry keeps the starting space group (spglib finds it). `first_step`:
    a resumed relaxation's steps so far (numbers the progress lines and the observers' steps).
    `observers` (driver.observers) see every step: a task's frames, checkpoints and stop.
    `restart` (driver.optimizer_state) and `orig_cell` (the cell filter's reference, the job's
    starting cell) make a resumed relaxation take exactly the steps the killed one would have;
    `on_start` is handed the optimizer (what a checkpoint captures)."""
    if symmetry:
        from ase.constraints import FixSymmetry

        atoms.set_constraint(FixSymmetry(atoms))
    target = _cell_filter(atoms, pressure_GPa, orig_cell) if cell else atoms
    dynamics = OPTIMIZERS[optimizer](target, logfile=None, comm=serial_comm())
    offset = first_step
    if restart is not None:  # the optimizer as it was: its own count of steps continues
        restore_optimizer_state(restart, dynamics, first_step)
        offset = 0
    if on_start is not None:
        on_start(dynamics)
    progress = Progress(log, label, first_step + max_steps, start=first_step)

    def report() -> None:
        step = offset + int(dynamics.nsteps)
        progress.update(step, f"fmax {_fmax(target):.4f} eV/Å  E {atoms.get_potential_energy():.6f} eV")
        if observers is not None:
            observers.at(step)

    dynamics.attach(report, interval=1)
    converged = bool(dynamics.run(fmax=fmax_eV_A, steps=max_steps))
    if symmetry:
        atoms.set_constraint()  # a plain structure from here on: the symmetry is in its positions
    outcome = Relaxation(converged, int(dynamics.nsteps) - (first_step - offset), _fmax(target))
    progress.finish(f"({'cell and positions' if cell else 'positions'}): {outcome.describe()}")
    return outcome


def _cell_filter(atoms: Atoms, pressure_GPa: float, orig_cell: np.ndarray | None) -> FrechetCellFilter:
    """ASE's cell filter, whose reference cell is the one the atoms have when it is built: for a
    resumed relaxation it is built on the job's starting cell (`orig_cell`), then the atoms get
    their own cell back, so its coordinates are those of the relaxation that was killed."""
    if orig_cell is None:
        return FrechetCellFilter(atoms, scalar_pressure=pressure_GPa * units.GPa)
    now = atoms.cell[:].copy()
    atoms.set_cell(orig_cell, scale_atoms=False)
    target = FrechetCellFilter(atoms, scalar_pressure=pressure_GPa * units.GPa)
    atoms.set_cell(now, scale_atoms=False)
    return target


def _fmax(target) -> float:
    forces = target.get_forces()
    return float(np.sqrt((forces**2).sum(axis=1).max())) if len(forces) else 0.0
