"""A diffusion study's optional density stage (`task.density_ps`): before a temperature's first
segment, NPT (ASE's Berendsen barostat, at `pressure_GPa`) for that long, then the cell set to its
mean over the stage's second half, atoms scaled with it. The study then runs in its own ensemble
(NVT usually) at that temperature's density: thermal expansion is in, barostat noise is not in
the MSD.

Nothing is written during the stage: a job killed in it has no checkpoint and starts again, and
the stage is deterministic (seeded velocities, Berendsen has no noise), so it ends where the
killed one would have.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

from driver import interrupt
from driver.errors import SimulationError

SAMPLES = 200  # cells recorded over the stage, at most


@dataclass(frozen=True)
class Density:
    volume_A3: float  # the mean volume the study runs at
    volume_std_A3: float  # its fluctuation over the stage's second half
    start_volume_A3: float


def equilibrate_density(atoms: Atoms, spec, temperature_K: float, label: str) -> Density:
    """Run the stage on `atoms` (velocities set, calculator attached) and leave them in the mean cell."""
    from driver.tasks.md import MDTask, explosion, make_integrator, observables

    steps = spec.steps_of(spec.density_ps)
    stage = MDTask(kind="md", steps=steps, temperature_K=temperature_K,
                   **{**spec.integration(), "ensemble": "npt_berendsen"})
    integrator = make_integrator(atoms, stage, temperature_K, spec.seed)
    start = float(atoms.get_volume())
    every = max(1, steps // SAMPLES)
    cells: list[np.ndarray] = []

    def watch() -> None:
        step = integrator.nsteps
        reason = explosion(atoms, observables(atoms, integrator, True), step, temperature_K, stage)
        if reason is not None:
            raise SimulationError(f"{label}: density stage (NPT): exploded: {reason}")
        cells.append(atoms.cell[:].copy())
        interrupt.raise_if_requested()  # nothing stored yet: --resume starts the stage again

    integrator.attach(watch, interval=every)
    with interrupt.deferred():
        integrator.run(steps)
    second_half = np.array(cells[len(cells) // 2:])
    atoms.set_cell(second_half.mean(axis=0), scale_atoms=True)
    volumes = np.abs(np.linalg.det(second_half))
    return Density(float(atoms.get_volume()), float(volumes.std()), start)
