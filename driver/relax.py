"""The one relaxation helper every task uses: positions, or positions and cell, on whatever
potential the atoms carry (the job's own surface), in a world of one (parallel.serial_comm)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ase import Atoms
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

from driver.parallel import serial_comm
from driver.schema import Bool, Strict, bounded

log = logging.getLogger(__name__)


class RelaxSpec(Strict):
    """Relaxation of positions (cell fixed) before dynamics."""

    fmax_eV_A: bounded(gt=0, le=100, unit="eV/Å") = 0.05
    max_steps: bounded(int, ge=1, le=10**7) = 200


class CellRelaxSpec(Strict):
    """Relaxation of positions and, by default, the cell (FIRE on ASE's FrechetCellFilter)."""

    fmax_eV_A: bounded(gt=0, le=100, unit="eV/Å") = 0.01
    max_steps: bounded(int, ge=1, le=10**7) = 500
    relax_cell: Bool = True


@dataclass(frozen=True)
class Relaxation:
    converged: bool
    steps: int

    def describe(self) -> str:
        return f"{'converged' if self.converged else 'NOT converged'} after {self.steps} steps"


def relax(atoms: Atoms, fmax_eV_A: float, max_steps: int, cell: bool = False, label: str = "relaxation") -> Relaxation:
    """FIRE until every force (and, with `cell`, the stress times the volume) is below fmax;
    `atoms` is relaxed in place and must carry its calculator."""
    target = FrechetCellFilter(atoms) if cell else atoms
    optimizer = FIRE(target, logfile=None, comm=serial_comm())
    outcome = Relaxation(bool(optimizer.run(fmax=fmax_eV_A, steps=max_steps)), int(optimizer.nsteps))
    log.info("%s (%s): %s", label, "cell and positions" if cell else "positions", outcome.describe())
    return outcome
