"""Geometry and cell relaxation (`task.kind: relax`) with ASE's optimizers, one job per variant.

driver.relax does the relaxation (FIRE, BFGS or L-BFGS; FrechetCellFilter with an optional
pressure; FixSymmetry); this task streams its frames, stores a snapshot every
`output.checkpoint_every` steps so that `--resume` continues from the last one, and writes the
relaxed structure as CIF, extended XYZ and POSCAR. For the scalar softening correction forces and
stresses are divided by s, so at zero pressure the minimum is the raw one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
from ase import Atoms
from ase.io import write
from pydantic import Field

from driver import interrupt
from driver.errors import InputError, OutputError, first_line
from driver.observers import StepObservers
from driver.optimizer_state import capture_optimizer
from driver.points import PointStore
from driver.relax import Optimizer, relax
from driver.results import TaskResult, array, scalar
from driver.schema import Bool, Strict, bounded
from driver.structure import check_periodic
from driver.tasks import Task

if TYPE_CHECKING:
    from driver.specs import StructureSpec

log = logging.getLogger(__name__)

SNAPSHOT = "relax_snapshot"
STRUCTURE_FORMATS = {"cif": "cif", "extxyz": "extxyz", "POSCAR": "vasp"}


class RelaxTask(Strict):
    """Relax positions, or positions and cell, on each variant's surface; one job per variant."""

    kind: Literal["relax"]
    cell: Bool = Field(False, description="relax the cell too (ASE's FrechetCellFilter)")
    symmetry: Bool = Field(False, description="keep the starting space group (ASE's FixSymmetry)")
    optimizer: Optimizer = Field("fire", description="ASE optimizer: fire, bfgs or lbfgs")
    fmax_eV_A: bounded(gt=0, le=100, unit="eV/Å") = Field(
        0.02, description="converged when every force (with cell: and the stress x volume) is below this")
    max_steps: bounded(int, ge=1, le=10**7) = Field(
        500, description="optimizer steps at most; unconverged, the last structure is kept and reported so")
    pressure_GPa: bounded(ge=-1000, le=1000, unit="GPa") = Field(0.0, description="with cell: the target pressure")
    write_every: bounded(int, ge=1, le=10**7) = Field(1, description="optimizer steps between stored frames")


@dataclass
class RelaxResult(TaskResult):
    """The relaxed (or, not converged, the last) structure and how the relaxation went."""

    kind: ClassVar[str] = "relax"
    converged: bool = scalar()
    steps: int = scalar()
    fmax_eV_A: float = scalar("eV Angstrom-1")
    initial_energy_eV: float = scalar("eV")
    final_energy_eV: float = scalar("eV")
    energy_change_eV: float = scalar("eV")
    volume_A3: float = scalar("Angstrom^3")
    volume_change: float = scalar()  # relative: V/V_start - 1
    cell_lengths_A: list[float] = scalar("Angstrom")
    cell_angles_deg: list[float] = scalar("degree")
    structure_files: list[str] = scalar()
    positions_A: np.ndarray = array("Angstrom")
    cell_A: np.ndarray = array("Angstrom")


def relaxed_structure_paths(out_dir: Path, job: str) -> dict[str, Path]:
    return {name: out_dir / (f"{job}.POSCAR" if name == "POSCAR" else f"{job}.relaxed.{name}")
            for name in STRUCTURE_FORMATS}


def write_structure(atoms: Atoms, paths: dict[str, Path]) -> None:
    """The relaxed (or, not converged, the last) structure in the formats users pass on."""
    plain = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    try:
        for name, path in paths.items():
            write(path, plain, format=STRUCTURE_FORMATS[name])
    except OSError as exc:
        raise OutputError(f"{paths['cif'].parent}: cannot write the relaxed structure ({first_line(exc)})") from None


def run(context) -> RelaxResult:
    spec: RelaxTask = context.spec
    atoms, writer = context.atoms, context.writer
    store = PointStore(writer)
    first_step, restart = 0, None
    snapshot = store.get(SNAPSHOT) if context.resume is not None else None
    if snapshot is not None:  # --resume: the last stored structure and the optimizer's state
        atoms.set_cell(snapshot["cell"])
        atoms.set_positions(snapshot["positions"])
        first_step = int(context.resume.step)
        restart = {key.removeprefix("optimizer/"): value for key, value in snapshot.items()
                   if key.startswith("optimizer/")}
        log.info("%s: relaxation continues from its snapshot at step %d", context.job.name, first_step)
    energy_start = float(snapshot["energy_start_eV"]) if snapshot is not None else float(atoms.get_potential_energy())
    volume_start = float(snapshot["volume_start_A3"]) if snapshot is not None else float(atoms.get_volume())
    # The cell filter's reference: the job's starting cell, also for a resumed relaxation.
    orig_cell = np.array(snapshot["orig_cell"]) if snapshot is not None and "orig_cell" in snapshot else np.array(atoms.cell)
    live: dict[str, object] = {}

    def snapshot_values() -> dict[str, object]:
        return {"positions": atoms.get_positions(), "cell": atoms.cell[:], "orig_cell": np.array(orig_cell),
                "energy_start_eV": energy_start, "volume_start_A3": volume_start,
                **{f"optimizer/{key}": value for key, value in capture_optimizer(live["optimizer"]).items()}}

    observers = StepObservers(  # `relax` tells them each step (observers.at)
        record=lambda: writer.append(observers.current, float(observers.current), atoms,
                                     {"potential_energy": float(atoms.get_potential_energy())}),
        record_every=spec.write_every,
        checkpoint=lambda: store.put(SNAPSHOT, snapshot_values(), observers.current),
        checkpoint_every=context.output.checkpoint_every,
        # The start is already a frame and the snapshot of a resumed relaxation: neither again.
        recorded_at=first_step if snapshot is not None else None, checkpointed_at=first_step)
    with interrupt.deferred():
        outcome = relax(atoms, spec.fmax_eV_A, spec.max_steps - first_step, cell=spec.cell,
                        label=f"{context.job.name}: relaxation", optimizer=spec.optimizer,
                        pressure_GPa=spec.pressure_GPa, symmetry=spec.symmetry, observers=observers,
                        first_step=first_step, restart=restart or None, orig_cell=orig_cell,
                        on_start=lambda optimizer: live.update(optimizer=optimizer))
    interrupt.raise_if_requested()
    steps = first_step + outcome.steps
    if steps % spec.write_every:  # the final structure is always a frame
        writer.append(steps, float(steps), atoms, {"potential_energy": float(atoms.get_potential_energy())})
    paths = relaxed_structure_paths(context.out_dir, context.job.name)
    write_structure(atoms, paths)
    if not outcome.converged:
        log.warning("%s: relaxation NOT converged after %d steps (fmax %.4f > %.4f eV/Å); the last structure is "
                    "kept in %s", context.job.name, steps, outcome.fmax_eV_A, spec.fmax_eV_A, paths["cif"].name)
    lengths, angles = atoms.cell.cellpar()[:3], atoms.cell.cellpar()[3:]
    final_energy = float(atoms.get_potential_energy())
    return RelaxResult(
        converged=outcome.converged, steps=steps, fmax_eV_A=outcome.fmax_eV_A, initial_energy_eV=energy_start,
        final_energy_eV=final_energy, energy_change_eV=final_energy - energy_start,
        volume_A3=float(atoms.get_volume()), volume_change=float(atoms.get_volume()) / volume_start - 1.0,
        cell_lengths_A=[round(float(x), 6) for x in lengths], cell_angles_deg=[round(float(x), 4) for x in angles],
        structure_files=[path.name for path in paths.values()],
        positions_A=atoms.get_positions(), cell_A=atoms.cell[:])


class RelaxTaskKind(Task[RelaxTask, RelaxResult]):
    kind = "relax"
    spec = RelaxTask
    streams_trajectory = True
    result = RelaxResult

    def check(self, spec: RelaxTask, atoms: Atoms, structure: StructureSpec) -> None:
        super().check(spec, atoms, structure)
        if spec.cell:
            check_periodic(atoms, "task.cell: a cell relaxation needs")
        if spec.pressure_GPa and not spec.cell:
            raise InputError(f"task.pressure_GPa: {spec.pressure_GPa:g} GPa acts on the cell; set task.cell: true")

    def needs_stress(self, spec: RelaxTask) -> bool:
        return spec.cell

    def run(self, context) -> RelaxResult:
        return run(context)

    def report_line(self, entry: dict, result: RelaxResult) -> str:
        state = "converged" if result.converged else "NOT converged (last structure kept)"
        return (f"  {entry['file']:<24} {state} in {result.steps} steps, fmax {result.fmax_eV_A:.4f} eV/Å, "
                f"ΔE {result.energy_change_eV:+.4f} eV, V {result.volume_A3:.3f} Å^3 "
                f"({100 * result.volume_change:+.2f}%); {result.structure_files[0]}")

    def comparison_line(self, name: str, raw: RelaxResult, corrected: RelaxResult, scale: float | None) -> str | None:
        ratio = corrected.volume_A3 / raw.volume_A3
        return (f"  relax: corrected/raw relaxed volume = {ratio:.5f}, relaxation energy "
                f"{corrected.energy_change_eV:+.4f} vs {raw.energy_change_eV:+.4f} eV "
                f"(exact for the scalar correction at zero pressure: the same minimum, volume ratio 1, "
                f"energy change x 1/s)")


TASK = RelaxTaskKind()

