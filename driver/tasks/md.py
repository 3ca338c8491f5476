"""Molecular dynamics with ASE's integrators, streaming every `write_every`-th frame.

The same seed gives the same Maxwell-Boltzmann velocities for raw and corrected jobs, so a
comparison isolates the PES.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
from ase import Atoms, units
from ase.md.md import MolecularDynamics
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.neighborlist import neighbor_list
from pydantic import Field, ValidationInfo, field_validator

from driver import interrupt
from driver.checkpoint import MDState, capture, read_latest, restore_atoms, restore_integrator
from driver.correction import EXPECTED_RATIO_TEXT, expected_ratio
from driver.ensembles import ENSEMBLES, EnsembleName
from driver.errors import InputError, OutputError, SimulationError
from driver.jobs import Job
from driver.observers import StepObservers
from driver.output import H5MDWriter
from driver.parallel import serial_comm
from driver.progress import Progress
from driver.relax import RelaxSpec, relax
from driver.results import TaskResult, scalar
from driver.schema import Float, Strict, bounded
from driver.tasks import Prepared, Task
from driver.tasks.md_schedule import (
    MAX_TEMPERATURE_K,
    Schedule,
    TemperaturePoints,
    TemperatureRamp,
    parse_schedule,
    set_target_temperature,
)

if TYPE_CHECKING:
    from driver.specs import StructureSpec

log = logging.getLogger(__name__)

MAX_TIMESTEP_FS = 10.0


class MDIntegration(Strict):
    """How MD integrates, shared by every task that runs MD (md, diffusion): the ensemble and its
    thermostat and barostat settings, the seed, and the explosion limits."""

    ensemble: EnsembleName = Field(
        "nvt_langevin", description="ASE integrator: nve; nvt_ Langevin, Nose-Hoover chain or Bussi; npt_ Berendsen, "
        "MTK (isotropic) or MTK aniso (all cell components)")
    timestep_fs: bounded(gt=0, le=MAX_TIMESTEP_FS, unit="fs", warn_above=5,
                         why="most integrators lose energy conservation above ~5 fs, sooner with H or Li") = Field(
        description="integration time step")
    seed: bounded(int, ge=0, le=2**32 - 1) = Field(0, description="numpy RNG seed for velocities and thermostat noise")
    friction_per_fs: bounded(gt=0, le=10, unit="fs^-1") = Field(0.01, description="Langevin friction")
    tdamp_fs: bounded(gt=0, le=10**6, unit="fs") = Field(100.0, description="thermostat time constant")
    pressure_GPa: bounded(ge=-1000, le=1000, unit="GPa") = Field(
        0.0, description="barostat target pressure: npt_ ensembles (and diffusion's density_ps) only")
    pdamp_fs: bounded(gt=0, le=10**7, unit="fs") = Field(1000.0, description="barostat time constant")
    compressibility_per_GPa: bounded(gt=0, le=10, unit="GPa^-1") = Field(
        0.01, description="Berendsen barostat compressibility"
    )
    min_distance_A: bounded(gt=0, le=5, unit="Å") = Field(
        0.5, description="refuse a start with two atoms closer; stop MD when they come closer (explosion)")
    max_temperature_factor: bounded(gt=1, le=1000) = Field(5.0, description="stop when T exceeds this x target")

    def integration(self) -> dict[str, object]:
        """These fields as keyword arguments (an MDTask for one stretch of another task's MD)."""
        return {name: getattr(self, name) for name in MDIntegration.model_fields}


class MDTask(MDIntegration):
    """Molecular dynamics with one of ASE's integrators; one job per temperature, or one job
    following a temperature schedule (driver.tasks.md_schedule)."""

    kind: Literal["md"]
    steps: bounded(int, ge=1, le=10**9) = Field(description="MD steps per job")
    temperature_K: Float | list[Float] | TemperatureRamp | TemperaturePoints = Field(
        description="target temperature; a list: one job per temperature; a ramp {start, stop, steps} or "
        "breakpoints {schedule: [[step, K], ...]}: one job following it")
    relax: RelaxSpec | None = Field(
        None, description="relax the positions (cell fixed) before velocities are drawn; null: start as given")

    @field_validator("temperature_K", mode="before")
    @classmethod
    def _real_temperatures(cls, value):
        """Before pydantic's coercion, which would read `true` as 1 K; a mapping is a schedule."""
        if isinstance(value, dict):
            return parse_schedule(value)
        for t in value if isinstance(value, list) else [value]:
            if isinstance(t, bool):
                raise ValueError(f"must be a number in K, got {str(t).lower()}")
            if isinstance(t, float) and not math.isfinite(t):
                raise ValueError(f"must be a finite number in K, got {t!r}")
        return value

    @field_validator("temperature_K")
    @classmethod
    def _positive_temperatures(cls, value, info: ValidationInfo):
        if isinstance(value, TemperatureRamp | TemperaturePoints):
            _check_schedule(Schedule(value.points()), info.data)
            return value
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ValueError("must list at least one temperature")
        allowed = f"(allowed: 0 < temperature_K <= {MAX_TEMPERATURE_K:g} K)"
        for t in values:
            if not t > 0:
                raise ValueError(f"must be > 0, got {t:g} {allowed}")
            if t > MAX_TEMPERATURE_K:
                raise ValueError(f"must be <= {MAX_TEMPERATURE_K:g}, got {t:g} {allowed}")
        if len(set(values)) != len(values):
            raise ValueError(f"temperatures repeat: {values}")
        return value

    @property
    def schedule(self) -> Schedule | None:
        """The one scheduled job's targets; None for a temperature per job."""
        if isinstance(self.temperature_K, TemperatureRamp | TemperaturePoints):
            return Schedule(self.temperature_K.points())
        return None

    @property
    def temperatures_K(self) -> list[float]:
        """One job per temperature (a schedule: one job, from its first temperature)."""
        if self.schedule is not None:
            return [self.schedule.start_K]
        return list(self.temperature_K) if isinstance(self.temperature_K, list) else [
            self.temperature_K
        ]


def _check_schedule(schedule: Schedule, fields: dict) -> None:
    """`fields`: the task's fields declared before temperature_K (absent where they were invalid)."""
    ensemble = fields.get("ensemble")
    if ensemble in ENSEMBLES and ENSEMBLES[ensemble].set_target is None:
        raise ValueError(f"a schedule needs a thermostat; ensemble {ensemble} has none "
                         "(temperature_K only draws its starting velocities there)")
    steps = fields.get("steps")
    if steps is not None and schedule.last_step > steps:
        raise ValueError(f"the schedule runs to step {schedule.last_step}, beyond task.steps ({steps})")


def initialize_velocities(atoms: Atoms, temperature_K: float, seed: int) -> None:
    """Maxwell-Boltzmann velocities at T with zero total momentum, reproducible from the seed."""
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed),
                                 comm=serial_comm())
    Stationary(atoms)


def make_integrator(atoms: Atoms, task: MDTask, temperature_K: float, seed: int) -> MolecularDynamics:
    """The ASE integrator for the task's ensemble, in a world of one (driver.parallel.serial_comm)."""
    # Stochastic integrators draw from their own seeded RNG.
    integrator = ENSEMBLES[task.ensemble].build(atoms, task, temperature_K, np.random.default_rng(seed + 1))
    integrator.comm = serial_comm()  # not every ASE integrator takes `comm` as an argument
    return integrator


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
class MDResult(TaskResult):
    """Headline numbers of one MD job, from the frames in its file (the trajectory itself is the
    H5MD data); the schedule fields only for a job that follows a temperature schedule."""

    kind: ClassVar[str] = "md"
    steps: int = scalar()
    frames: int = scalar()
    mean_temperature_K: float = scalar("K")
    final_potential_energy_eV: float = scalar("eV")
    conserved_energy_drift_eV_per_atom_per_ps: float | None = scalar("eV atom-1 ps-1")  # None: nothing is conserved
    rms_displacement_A: float = scalar("Angstrom")  # over the second half of the frames
    ensemble: str = scalar()
    temperature_schedule_K: list[list[float]] | None = scalar("K", optional=True)
    final_target_temperature_K: float | None = scalar("K", optional=True)


def summarize(atoms: Atoms, task: MDTask, writer: H5MDWriter) -> MDResult:
    """Headline numbers from the frames in the file, so a resumed job reports the same as an
    uninterrupted one."""
    times_fs = writer.steps() * task.timestep_fs
    stored = writer.file["observables"]
    conserved_name = "conserved_energy" if "conserved_energy" in stored else "total_energy" if task.ensemble == "nve" else None
    if task.schedule is not None:
        conserved_name = None  # with a moving target the thermostat's "conserved" energy is not conserved
    drift = None  # only where a conserved quantity exists: NVE, or the integrator reports one
    if conserved_name is not None and writer.frames > 2:
        slope_per_fs = np.polyfit(times_fs, writer.series(conserved_name), 1)[0]
        drift = float(slope_per_fs * 1000.0 / len(atoms))
    msd = writer.series("mean_squared_displacement")
    return MDResult(
        steps=task.steps,
        frames=writer.frames,
        mean_temperature_K=float(np.mean(writer.series("temperature"))),
        final_potential_energy_eV=float(atoms.get_potential_energy()),
        conserved_energy_drift_eV_per_atom_per_ps=drift,
        # Mean over the second half of the frames: vibration amplitude once motion has developed.
        rms_displacement_A=float(np.sqrt(np.mean(msd[len(msd) // 2:]))),
        ensemble=task.ensemble,
    )


def run_md(atoms: Atoms, task: MDTask, temperature_K: float | Schedule, writer: H5MDWriter, write_every: int,
           label: str = "md", checkpoint_every: int | None = None, resume: MDState | None = None) -> MDResult:
    """Integrate up to `task.steps` steps, streaming frames and checkpoints; from `resume`, continue
    a checkpointed run exactly (same positions to the last bit, thermostat noise included).
    `temperature_K`: the target, or a Schedule the thermostat follows step by step."""
    schedule = temperature_K if isinstance(temperature_K, Schedule) else Schedule.constant(temperature_K)
    if resume is not None:
        restore_atoms(resume, atoms)
    # Built at the schedule's first temperature (thermostat masses), as the uninterrupted run was.
    integrator = make_integrator(atoms, task, schedule.start_K, task.seed)
    if resume is not None:
        restore_integrator(resume, integrator)
        start_positions = writer.file["particles/all/position/value"][0]
    else:
        start_positions = atoms.get_positions()
    if schedule.varies:
        set_target_temperature(integrator, schedule.at(integrator.nsteps))
    with_cell = ENSEMBLES[task.ensemble].moves_cell
    progress = Progress(log, label, task.steps, start=integrator.nsteps)

    def follow_schedule() -> None:  # after step n: the next step integrates at T(n)
        set_target_temperature(integrator, schedule.at(integrator.nsteps))

    def record() -> None:
        step = integrator.nsteps
        target_K = schedule.at(step)
        values = observables(atoms, integrator, with_cell)
        values["mean_squared_displacement"] = float(np.mean(np.sum((atoms.get_positions() - start_positions) ** 2, axis=1)))
        if schedule.varies:
            values["target_temperature"] = target_K
        reason = explosion(atoms, values, step, target_K, task)
        if reason is not None:
            raise SimulationError(f"{label}: exploded: {reason}; the {writer.frames} frames before are kept")
        writer.append(step, step * task.timestep_fs, atoms, values)
        target = f" (target {target_K:.0f} K)" if schedule.varies else ""
        progress.update(step, f"T={values['temperature']:.0f} K{target}  Epot={values['potential_energy']:.4f} eV")

    observers = StepObservers(
        lambda: integrator.nsteps, record=record, record_every=write_every,
        checkpoint=(lambda: writer.checkpoint(capture(atoms, integrator, writer.frames))) if checkpoint_every else None,
        checkpoint_every=checkpoint_every, checkpointed_at=resume.step if resume is not None else None,
        # the checkpoint's frames hold its own step's frame: ASE observes step 0 again when a run
        # resumes from it, which must not write that frame twice
        recorded_at=resume.step if resume is not None else None)
    if schedule.varies:
        integrator.attach(follow_schedule, interval=1)
    integrator.attach(observers, interval=1)
    with interrupt.deferred():
        try:
            integrator.run(task.steps - integrator.nsteps)
        except OutputError:  # stopped for lack of disk space: checkpoint if the file still takes writes
            if not writer.failed:
                observers.save()
            raise
        observers.save()  # the final state: a resume of a finished run has nothing left to integrate
    return summarize(atoms, task, writer)


def temperature_jobs(variants, temperatures_K) -> list[Job]:
    """One job per variant and temperature, named like raw-T600K (MD and diffusion studies)."""
    return [Job(f"{variant}-T{t:g}K", variant, t) for variant in variants for t in temperatures_K]


def check_cell_can_move(ensemble: str, atoms: Atoms) -> None:
    """An ensemble that changes the cell under pressure needs a cell periodic in all directions."""
    if ENSEMBLES[ensemble].moves_cell and not atoms.pbc.all():
        raise InputError(f"task.ensemble: {ensemble} changes the cell under pressure; the structure is "
                         f"not periodic in all three directions (pbc {atoms.pbc.tolist()})")


class MDTaskKind(Task[MDTask, MDResult]):
    kind = "md"
    spec = MDTask
    result = MDResult
    streams_trajectory = True
    batches_replicas = True

    def plan(self, spec: MDTask, variants) -> list[Job]:
        if spec.schedule is not None:  # one job follows the schedule; it has no single temperature
            return [Job(f"{variant}-{spec.schedule.label()}", variant) for variant in variants]
        return temperature_jobs(variants, spec.temperatures_K)

    def check(self, spec: MDTask, atoms: Atoms, structure: StructureSpec) -> None:
        super().check(spec, atoms, structure)
        check_cell_can_move(spec.ensemble, atoms)

    def needs_stress(self, spec: MDTask) -> bool:
        return ENSEMBLES[spec.ensemble].moves_cell

    def resume_state(self, file, spec: MDTask) -> MDState | None:
        """The newest valid checkpoint: MD continues exactly from it."""
        return read_latest(file)

    def prepare(self, atoms: Atoms, spec: MDTask) -> Prepared:
        """Optional relaxation of positions on the job's potential, before velocities are drawn."""
        if spec.relax is None:
            return Prepared(atoms)
        outcome = relax(atoms, spec.relax.fmax_eV_A, spec.relax.max_steps, label="pre-relaxation")
        return Prepared(atoms, {"prerelax_converged": outcome.converged, "prerelax_steps": outcome.steps})

    def run(self, context) -> MDResult:
        """Seeded Maxwell-Boltzmann start (or the job's checkpoint), then `run_md`."""
        spec: MDTask = context.spec
        target = spec.schedule or Schedule.constant(context.job.temperature_K)
        if context.resume is None:
            initialize_velocities(context.atoms, target.start_K, spec.seed)
        result = run_md(context.atoms, spec, target, context.writer,
                        context.output.write_every, context.job.name,
                        checkpoint_every=context.output.checkpoint_every, resume=context.resume)
        if spec.schedule is not None:
            result = dataclasses.replace(result, temperature_schedule_K=[list(point) for point in spec.schedule.points],
                                         final_target_temperature_K=spec.schedule.at(spec.steps))
        return result

    def report_line(self, entry: dict, result: MDResult) -> str:
        parts = [f"  {entry['file']:<24} {result.steps} steps", f"<T> = {result.mean_temperature_K:.0f} K",
                 f"RMS displacement {result.rms_displacement_A:.3f} Å"]
        if result.conserved_energy_drift_eV_per_atom_per_ps is not None:
            parts.append(f"conserved-energy drift {result.conserved_energy_drift_eV_per_atom_per_ps:.1e} eV/atom/ps")
        return ", ".join(parts)

    def compare_section(self, jobs, options):
        """Diffusivities, conductivities and Arrhenius fits from the trajectories (driver.tasks.md_compare)."""
        from driver.tasks.md_compare import compare_section

        return compare_section(jobs, options)

    def comparison_line(self, name: str, raw: MDResult, corrected: MDResult, scale: float | None) -> str | None:
        expected = expected_ratio("displacement", scale)
        if not raw.rms_displacement_A or expected is None:
            return None
        ratio = corrected.rms_displacement_A / raw.rms_displacement_A
        return (f"  {name[len('corrected-'):] or 'all'}: corrected/raw RMS displacement = {ratio:.3f} "
                f"(harmonic expectation {EXPECTED_RATIO_TEXT['displacement']} = {expected:.3f}, s = {scale:g})")


TASK = MDTaskKind()
