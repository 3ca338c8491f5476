"""Molecular dynamics with ASE's integrators, streaming every `write_every`-th frame.

The same seed gives the same Maxwell-Boltzmann velocities for raw and corrected jobs, so a
comparison isolates the PES.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from ase import Atoms, units
from ase.md.md import MolecularDynamics
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.neighborlist import neighbor_list
from ase.optimize import FIRE

from driver.errors import SimulationError
from driver.output import H5MDWriter
from driver.recipe import MDTask, RelaxSpec

log = logging.getLogger(__name__)


def relax_positions(atoms: Atoms, spec: RelaxSpec) -> tuple[bool, int]:
    """Relax positions at fixed cell with FIRE; returns (converged, steps taken)."""
    optimizer = FIRE(atoms, logfile=None)
    converged = bool(optimizer.run(fmax=spec.fmax_eV_A, steps=spec.max_steps))
    return converged, optimizer.nsteps


def initialize_velocities(atoms: Atoms, temperature_K: float, seed: int) -> None:
    """Maxwell-Boltzmann velocities at T with zero total momentum, reproducible from the seed."""
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed))
    Stationary(atoms)


def _fix_center_of_mass(atoms: Atoms) -> None:
    from ase.constraints import FixCom

    if not any(isinstance(c, FixCom) for c in atoms.constraints):
        atoms.set_constraint([*atoms.constraints, FixCom()])


def make_integrator(atoms: Atoms, task: MDTask, temperature_K: float, seed: int) -> MolecularDynamics:
    """The ASE integrator for the task's ensemble; stochastic ones draw from their own seeded RNG."""
    dt = task.timestep_fs * units.fs
    rng = np.random.default_rng(seed + 1)
    if task.ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep=dt)
    if task.ensemble == "nvt_langevin":
        from ase.md.langevin import Langevin

        # fixcm=True biases the NVT distribution; ASE's recommendation is FixCom instead.
        _fix_center_of_mass(atoms)
        return Langevin(atoms, timestep=dt, temperature_K=temperature_K,
                        friction=task.friction_per_fs / units.fs, fixcm=False, rng=rng)
    if task.ensemble == "nvt_nose_hoover":
        from ase.md.nose_hoover_chain import NoseHooverChainNVT

        return NoseHooverChainNVT(atoms, timestep=dt, temperature_K=temperature_K,
                                  tdamp=task.tdamp_fs * units.fs)
    if task.ensemble == "nvt_bussi":
        from ase.md.bussi import Bussi

        return Bussi(atoms, timestep=dt, temperature_K=temperature_K,
                     taut=task.tdamp_fs * units.fs, rng=rng)
    if task.ensemble == "npt_berendsen":
        from ase.md.nptberendsen import NPTBerendsen

        return NPTBerendsen(atoms, timestep=dt, temperature_K=temperature_K,
                            pressure_au=task.pressure_GPa * units.GPa, taut=task.tdamp_fs * units.fs,
                            taup=task.pdamp_fs * units.fs,
                            compressibility_au=task.compressibility_per_GPa / units.GPa)
    if task.ensemble == "npt_mtk":
        from ase.md.nose_hoover_chain import IsotropicMTKNPT

        return IsotropicMTKNPT(atoms, timestep=dt, temperature_K=temperature_K,
                               pressure_au=task.pressure_GPa * units.GPa,
                               tdamp=task.tdamp_fs * units.fs, pdamp=task.pdamp_fs * units.fs)
    raise ValueError(f"unknown ensemble {task.ensemble!r}")


def explosion(atoms: Atoms, values: dict[str, float], step: int, target_K: float, task: MDTask) -> str | None:
    """Why this frame means the simulation has blown up, or None. Softened potentials at high
    temperature do explode; the user must see where and why, not a NaN trajectory."""
    bad = {name: v for name, v in values.items() if not math.isfinite(v)}
    if bad:
        return f"non-finite {', '.join(bad)} at step {step}"
    forces = atoms.get_forces()
    if not np.isfinite(forces).all():
        atoms_hit = np.unique(np.argwhere(~np.isfinite(forces))[:, 0])[:5].tolist()
        return f"non-finite forces at step {step} on atoms {atoms_hit}"
    i, j, d = neighbor_list("ijd", atoms, task.min_distance_A)
    if len(d):
        k = int(np.argmin(d))
        return (f"atoms {int(i[k])} ({atoms[int(i[k])].symbol}) and {int(j[k])} ({atoms[int(j[k])].symbol}) "
                f"{d[k]:.3f} Å apart at step {step} (< min_distance_A {task.min_distance_A:g})")
    if values["temperature"] > task.max_temperature_factor * target_K:
        return (f"temperature {values['temperature']:.0f} K at step {step} exceeds {task.max_temperature_factor:g} x "
                f"the target {target_K:g} K")
    return None


def observables(atoms: Atoms, integrator: MolecularDynamics, with_cell: bool) -> dict[str, float]:
    """Per-frame scalars; energies come from the calculator's cache of the current step."""
    potential = float(atoms.get_potential_energy())
    kinetic = float(atoms.get_kinetic_energy())
    values = {
        "potential_energy": potential,
        "kinetic_energy": kinetic,
        "total_energy": potential + kinetic,
        "temperature": float(atoms.get_temperature()),
    }
    conserved = getattr(integrator, "get_conserved_energy", None)
    if conserved is not None:
        values["conserved_energy"] = float(conserved())
    if with_cell:
        values["volume"] = float(atoms.get_volume())
        values["pressure"] = float(-np.trace(atoms.get_stress(voigt=False)) / 3 / units.GPa)
    return values


@dataclass
class MDResult:
    steps: int
    frames: int
    mean_temperature_K: float
    final_potential_energy_eV: float
    conserved_energy_drift_eV_per_atom_per_ps: float | None
    rms_displacement_A: float
    ensemble: str

    def as_dict(self) -> dict[str, float | int | None]:
        return dict(self.__dict__)


def run_md(atoms: Atoms, task: MDTask, temperature_K: float, writer: H5MDWriter,
           write_every: int, label: str = "md") -> MDResult:
    """Integrate `task.steps` steps from the atoms' current velocities, streaming frames."""
    integrator = make_integrator(atoms, task, temperature_K, task.seed)
    with_cell = task.ensemble.startswith("npt")
    temperatures: list[float] = []
    times_fs: list[float] = []
    conserved_energies: list[float] = []
    squared_displacements: list[float] = []
    start_positions = atoms.get_positions()
    report_every = max(1, task.steps // 10)

    def record() -> None:
        step = integrator.nsteps
        values = observables(atoms, integrator, with_cell)
        reason = explosion(atoms, values, step, temperature_K, task)
        if reason is not None:
            raise SimulationError(f"{label}: exploded: {reason}; the {writer.frames} frames before are kept")
        writer.append(step, step * task.timestep_fs, atoms, values)
        temperatures.append(values["temperature"])
        squared_displacements.append(float(np.mean(np.sum((atoms.get_positions() - start_positions) ** 2, axis=1))))
        times_fs.append(step * task.timestep_fs)
        conserved = values.get("conserved_energy", values["total_energy"] if task.ensemble == "nve" else None)
        if conserved is not None:
            conserved_energies.append(conserved)
        if step % report_every < write_every:
            log.info("%s: step %d/%d  T=%.0f K  Epot=%.4f eV", label, step, task.steps,
                     values["temperature"], values["potential_energy"])

    integrator.attach(record, interval=write_every)
    integrator.run(task.steps)
    drift = None  # only where a conserved quantity exists: NVE, or the integrator reports one
    if len(conserved_energies) > 2 and len(conserved_energies) == len(times_fs):
        slope_per_fs = np.polyfit(times_fs, conserved_energies, 1)[0]
        drift = float(slope_per_fs * 1000.0 / len(atoms))
    return MDResult(
        steps=task.steps,
        frames=writer.frames,
        mean_temperature_K=float(np.mean(temperatures)),
        final_potential_energy_eV=float(atoms.get_potential_energy()),
        conserved_energy_drift_eV_per_atom_per_ps=drift,
        # Mean over the second half of the frames: vibration amplitude once motion has developed.
        rms_displacement_A=float(np.sqrt(np.mean(squared_displacements[len(squared_displacements) // 2:]))),
        ensemble=task.ensemble,
    )


def prepare(atoms: Atoms, task: MDTask) -> dict:
    """Optional pre-relaxation of positions with the raw model, shared by all jobs."""
    if task.relax is None:
        return {}
    converged, steps = relax_positions(atoms, task.relax)
    log.info("pre-relaxation: %s after %d steps", "converged" if converged else "NOT converged", steps)
    return {"prerelax_converged": converged, "prerelax_steps": steps}


def run(context) -> dict:
    """The MD task for one job: seeded Maxwell-Boltzmann start, then `run_md`."""
    task = context.recipe.task
    initialize_velocities(context.atoms, context.job.temperature_K, task.seed)
    result = run_md(context.atoms, task, context.job.temperature_K, context.writer,
                    context.recipe.output.write_every, context.job.name)
    context.writer.write_results("md", result.as_dict())
    return result.as_dict()
