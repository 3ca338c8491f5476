"""Harmonic phonons by finite displacements with phonopy (`task.kind: phonons`).

phonopy makes the displaced supercells and turns forces into force constants; the driver only
evaluates the forces, many supercells per model call where the model batches. For the scalar
softening correction, F' = F/s makes force constants /s and frequencies /sqrt(s), exactly.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
from ase import Atoms
from ase.dft.kpoints import parse_path_string
from pydantic import Field, model_validator

from driver.correction import EXPECTED_RATIO_TEXT, expected_ratio
from driver.errors import SimulationError
from driver.points import PointStore, each_point
from driver.potential import Potential
from driver.relax import CellRelaxSpec
from driver.results import JobStatus, TaskResult, array, file_only, read_result, scalar
from driver.schema import Bool, Int, Strict, bounded
from driver.structure import check_atom_count, check_periodic
from driver.tasks import Prepared, Share, Task, evaluate_here, prerelaxed

if TYPE_CHECKING:
    from driver.specs import StructureSpec

log = logging.getLogger(__name__)


MeshDivisions = bounded(int, ge=1, le=1000)
MeshLength = bounded(gt=0, le=1000, unit="Å")


class PhononTask(Strict):
    """Harmonic phonons by finite displacements with phonopy; one job per variant."""

    kind: Literal["phonons"]
    supercell: tuple[Int, Int, Int] | tuple[tuple[Int, Int, Int], tuple[Int, Int, Int], tuple[Int, Int, Int]] | None = Field(
        None, description="phonopy's supercell: repeats [na, nb, nc] or a 3x3 matrix; exactly one of this and "
        "supercell_min_length_A")
    supercell_min_length_A: bounded(gt=0, le=200, unit="Å") | None = Field(
        None, description="the fewest repeats that make every lattice vector at least this long; exactly one of "
        "this and supercell")
    displacement_A: bounded(gt=0, le=0.2, unit="Å", warn_below=0.001, warn_above=0.05,
                            why="too small drowns in numerical noise, too large leaves the harmonic regime") = Field(
        0.01, description="finite displacement of one atom per displaced supercell (phonopy's distance)")
    symmetry: Bool = Field(True, description="use the crystal's symmetry (phonopy's is_symmetry): fewer displaced "
                           "supercells; false: every atom displaced")
    primitive: Literal["auto", "unit_cell"] = Field(
        "auto", description="primitive cell of the band path, mesh and thermal properties: auto (phonopy finds it) "
        "or unit_cell (the structure's cell as given)")
    relax: CellRelaxSpec | None = Field(
        None, description="relax positions and cell before the displacements; null: the structure as given")
    band_points: bounded(int, ge=2, le=10**4) = Field(51, description="q-points per band-path segment")
    mesh: tuple[MeshDivisions, MeshDivisions, MeshDivisions] | MeshLength = Field(
        30.0, description="DOS/thermal mesh: divisions or a length in Å")
    t_min_K: bounded(ge=0, le=1e5, unit="K") = Field(0.0, description="lowest temperature of the thermal properties")
    t_max_K: bounded(gt=0, le=1e5, unit="K") = Field(
        1000.0, description="highest temperature of the thermal properties (above t_min_K)")
    t_step_K: bounded(gt=0, le=1e5, unit="K") = Field(10.0, description="temperature step of the thermal properties")
    imaginary_tolerance_THz: bounded(gt=0, le=100, unit="THz") = Field(
        0.05, description="a frequency below minus this (band path or mesh) is reported as an imaginary mode")
    batched: Bool | Literal["auto"] = Field("auto", description="many supercells per model call; auto: timed both ways on the first call, the faster kept")
    batch_size: bounded(int, ge=1, le=10**5) | None = Field(None, description="displaced supercells per model call")

    @model_validator(mode="after")
    def _one_supercell_rule(self) -> PhononTask:
        if (self.supercell is None) == (self.supercell_min_length_A is None):
            raise ValueError("give exactly one of 'supercell' (repeats or 3x3 matrix) or 'supercell_min_length_A'")
        if self.supercell is not None and abs(np.linalg.det(np.diag(self.supercell) if len(np.shape(self.supercell)) == 1
                                                            else np.array(self.supercell))) < 1:
            raise ValueError(f"supercell matrix must have a non-zero determinant, got {self.supercell}")
        if self.t_max_K <= self.t_min_K:
            raise ValueError(f"t_max_K must exceed t_min_K, got {self.t_min_K:g} and {self.t_max_K:g}")
        return self


def to_phonopy(atoms: Atoms):
    from phonopy.structure.atoms import PhonopyAtoms

    return PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=atoms.cell[:], scaled_positions=atoms.get_scaled_positions())


def to_ase(cell) -> Atoms:
    return Atoms(symbols=cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True)


def supercell_matrix(atoms: Atoms, task: PhononTask) -> np.ndarray:
    """An explicit matrix or repeats, or the fewest repeats that make each lattice vector >= a length."""
    if task.supercell_min_length_A is not None:
        lengths = atoms.cell.lengths()
        return np.diag(np.maximum(1, np.ceil(task.supercell_min_length_A / lengths)).astype(int))
    matrix = np.asarray(task.supercell, dtype=int)
    return np.diag(matrix) if matrix.ndim == 1 else matrix


def make_phonopy(atoms: Atoms, task: PhononTask):
    """A Phonopy object with its displacements generated: the plain data other tools can continue from."""
    from phonopy import Phonopy

    with warnings.catch_warnings():  # we ask for "auto" on purpose; phonopy warns that it is the default
        warnings.filterwarnings("ignore", message="primitive_matrix defaulted")
        phonon = Phonopy(to_phonopy(atoms), supercell_matrix=supercell_matrix(atoms, task),
                         primitive_matrix="auto" if task.primitive == "auto" else "P", is_symmetry=task.symmetry)
    phonon.generate_displacements(distance=task.displacement_A)
    return phonon


def mean_frequency_THz(mesh: dict) -> float:
    """Mean of the mesh's real (positive) frequencies, THz, leaving out the three acoustic modes at
    Γ: they are zero by translational invariance, and whether round-off makes them +1e-4 or -1e-4
    THz must not decide whether they pull the mean down."""
    frequencies = np.asarray(mesh["frequencies"], dtype=float)
    keep = np.ones(frequencies.shape, dtype=bool)
    for q in np.flatnonzero(np.linalg.norm(np.asarray(mesh["qpoints"], dtype=float), axis=1) < 1e-8):
        keep[q, np.argsort(np.abs(frequencies[q]))[:3]] = False
    frequencies = frequencies[keep]
    return float(np.mean(frequencies[frequencies > 0]))


RESTART_CHUNK = 16  # displaced supercells per restart point, unless task.batch_size says otherwise


def compute_force_sets(phonon, potential: Potential, batched: bool | str, batch_size: int | None,
                       share: Share = evaluate_here, store: PointStore | None = None,
                       label: str = "phonons") -> tuple[np.ndarray, float]:
    """Forces on every displaced supercell minus the perfect supercell's residual forces.

    Returns (force sets, the potential's energy of the perfect supercell). `share` decides who
    evaluates the supercells (this rank, or all ranks of a shared job). With `store` (the job's
    file) the supercells go in chunks, each stored as it finishes, so --resume evaluates only the
    missing ones.
    """
    cells = [to_ase(phonon.supercell)] + [to_ase(cell) for cell in phonon.supercells_with_displacements]

    def evaluate(part: list[Atoms]) -> list:
        return share(lambda mine: potential.evaluate(mine, ("energy", "forces"), batched=batched,
                                                     batch_size=batch_size), part)

    if store is None:
        results = evaluate(cells)
        all_forces, energy = np.array([r.forces for r in results]), results[0].energy
    else:
        size = batch_size or RESTART_CHUNK
        chunks = [cells[start:start + size] for start in range(0, len(cells), size)]

        def compute(number: int) -> dict:
            results = evaluate(chunks[number])
            return {"forces": np.array([r.forces for r in results]), "energies": np.array([r.energy for r in results])}

        points = each_point(store, [f"supercells_{i:05d}" for i in range(len(chunks))], compute, log,
                            f"{label}: {len(cells) - 1} displaced supercells")
        all_forces = np.concatenate([p["forces"] for p in points])
        energy = float(points[0]["energies"][0])
    forces = all_forces[1:] - all_forces[0]
    if not np.isfinite(forces).all():
        raise SimulationError("non-finite forces on a displaced supercell")
    return forces, energy


def band_path(phonon, points_per_segment: int):
    """ASE's special-point path for the primitive lattice, in phonopy's q-point form."""
    from ase.cell import Cell
    from phonopy.phonon.band_structure import get_band_qpoints_and_path_connections

    path = Cell(phonon.primitive.cell).bandpath(npoints=0)
    sections = parse_path_string(path.path)
    special = path.special_points
    qpoints, connections = get_band_qpoints_and_path_connections(
        [[list(special[label]) for label in section] for section in sections], npoints=points_per_segment)
    labels = [_pretty(label) for section in sections for label in section]
    named = {tuple(np.round(point, 6)): _pretty(label) for label, point in special.items()}
    return qpoints, connections, labels, named


def _pretty(label: str) -> str:
    return "Γ" if label == "G" else label


@dataclass
class ImaginaryMode:
    qpoint: list[float]
    label: str
    frequency_THz: float

    def describe(self) -> str:
        return f"{self.label} {self.frequency_THz:.3f} THz"


def imaginary_modes(qpoints: np.ndarray, frequencies: np.ndarray, named: dict[tuple, str], tolerance_THz: float) -> list[ImaginaryMode]:
    """Q-points whose lowest frequency is below -tolerance (phonopy writes imaginary as negative)."""
    found = []
    for q, freqs in zip(qpoints, frequencies, strict=True):
        if freqs.min() < -tolerance_THz:
            key = tuple(np.round(q, 6))
            label = named.get(key, "q=(" + ", ".join(f"{x:.3f}" for x in q) + ")")
            if not any(m.label == label for m in found):
                found.append(ImaginaryMode([float(x) for x in q], label, float(freqs.min())))
    return found


@dataclass
class PhononResult(TaskResult):
    """phonopy's force constants and what follows from them: Γ, the band path, the DOS on the mesh,
    thermal properties; the mean frequency is the mesh's (driver.tasks.phonons.mean_frequency_THz)."""

    kind: ClassVar[str] = "phonons"
    n_displacements: int = scalar()
    supercell_matrix: list[list[int]] = scalar()
    frequencies_THz: list[float] = scalar("THz")  # at Γ, rounded to 1e-6 THz
    max_frequency_THz: float = scalar("THz")
    mean_frequency_THz: float = scalar("THz")
    imaginary_modes: bool = scalar()
    imaginary_qpoints: list[str] = scalar()
    free_energy_300K_kJ_mol: float = scalar("kJ mol-1")
    heat_capacity_300K_J_K_mol: float = scalar("J K-1 mol-1")
    phonopy_file: str = scalar()
    band_labels: list[str] | None = file_only(default=None)  # the path's special points
    band_connections: list[bool] | None = file_only(default=None)  # whether each segment joins the next
    supercell_energy_eV: float | None = file_only(default=None)
    gamma_frequencies_THz: np.ndarray = array("THz")
    band_qpoints: np.ndarray = array("1")
    band_distances: np.ndarray = array("Angstrom-1")
    band_frequencies_THz: np.ndarray = array("THz")
    band_segment_lengths: np.ndarray = array("1")
    dos_frequencies_THz: np.ndarray = array("THz")
    dos_states_per_THz: np.ndarray = array("THz-1")
    thermal_temperatures_K: np.ndarray = array("K")
    free_energy_kJ_mol: np.ndarray = array("kJ mol-1")
    entropy_J_K_mol: np.ndarray = array("J K-1 mol-1")
    heat_capacity_J_K_mol: np.ndarray = array("J K-1 mol-1")
    force_constants_eV_A2: np.ndarray = array("eV Angstrom-2")
    force_sets_eV_A: np.ndarray = array("eV Angstrom-1")


def run(context) -> PhononResult:
    task: PhononTask = context.spec
    phonon = make_phonopy(context.atoms, task)
    n_displacements = len(phonon.supercells_with_displacements)
    log.info("%s: %d displaced supercells of %d atoms", context.job.name, n_displacements, len(phonon.supercell))
    forces, supercell_energy = compute_force_sets(phonon, context.potential, task.batched, task.batch_size,
                                                  context.share, PointStore(context.writer), context.job.name)
    phonon.forces = forces
    phonon.produce_force_constants()
    phonon.symmetrize_force_constants()

    gamma = phonon.get_frequencies([0.0, 0.0, 0.0])
    qpoints, connections, labels, named = band_path(phonon, task.band_points)
    phonon.run_band_structure(qpoints, path_connections=connections, labels=labels)
    bands = phonon.get_band_structure_dict()
    phonon.run_mesh(task.mesh, is_gamma_center=True)
    phonon.run_total_dos()
    dos = phonon.get_total_dos_dict()
    phonon.run_thermal_properties(t_min=task.t_min_K, t_max=task.t_max_K, t_step=task.t_step_K,
                                  exclude_gamma_acoustic=True)
    thermal = phonon.get_thermal_properties_dict()

    band_q = np.concatenate(bands["qpoints"])
    band_f = np.concatenate(bands["frequencies"])
    mesh = phonon.get_mesh_dict()
    imaginary = imaginary_modes(np.vstack([band_q, mesh["qpoints"]]), np.vstack([band_f, mesh["frequencies"]]),
                                named, task.imaginary_tolerance_THz)
    if imaginary:
        log.warning("%s: imaginary modes at %s", context.job.name, ", ".join(m.describe() for m in imaginary))

    yaml_path = context.out_dir / f"{context.job.name}.phonopy.yaml"
    phonon.save(yaml_path, settings={"force_constants": True})
    at_300 = int(np.argmin(np.abs(thermal["temperatures"] - 300.0)))
    summary = {
        "n_displacements": n_displacements,
        "supercell_matrix": supercell_matrix(context.atoms, task).tolist(),
        "frequencies_THz": [round(float(f), 6) for f in gamma],
        "max_frequency_THz": float(band_f.max()),
        "mean_frequency_THz": mean_frequency_THz(mesh),
        "imaginary_modes": bool(imaginary),
        "imaginary_qpoints": [m.describe() for m in imaginary],
        "free_energy_300K_kJ_mol": float(thermal["free_energy"][at_300]),
        "heat_capacity_300K_J_K_mol": float(thermal["heat_capacity"][at_300]),
        "phonopy_file": yaml_path.name,
    }
    arrays = {
        "gamma_frequencies_THz": gamma,
        "band_qpoints": band_q,
        "band_distances": np.concatenate(bands["distances"]),
        "band_frequencies_THz": band_f,
        "band_segment_lengths": np.array([len(q) for q in bands["qpoints"]]),
        "dos_frequencies_THz": dos["frequency_points"],
        "dos_states_per_THz": dos["total_dos"],
        "thermal_temperatures_K": thermal["temperatures"],
        "free_energy_kJ_mol": thermal["free_energy"],
        "entropy_J_K_mol": thermal["entropy"],
        "heat_capacity_J_K_mol": thermal["heat_capacity"],
        "force_constants_eV_A2": phonon.force_constants,
        "force_sets_eV_A": forces,
    }
    return PhononResult(**summary, band_labels=list(labels), band_connections=[bool(c) for c in connections],
                        supercell_energy_eV=supercell_energy, **arrays)


def finalize(out_dir, entries: list[dict]) -> None:
    """After all jobs: a picture per job, and raw and corrected overlaid where both ran."""
    from driver.tasks.phonon_plots import plot_data, plot_phonons

    done = {e["job"]: plot_data(read_result(PhononResult, out_dir / e["file"]))
            for e in entries if e["status"] == JobStatus.COMPLETED}
    for name, data in done.items():
        plot_phonons(out_dir / f"{name}.phonons.png", [(name, data)])
        next(e for e in entries if e["job"] == name)["plot"] = f"{name}.phonons.png"
    if "raw" in done and "corrected" in done:
        plot_phonons(out_dir / "phonons_raw_vs_corrected.png", [("raw", done["raw"]), ("corrected", done["corrected"])])


class PhononTaskKind(Task[PhononTask, PhononResult]):
    kind = "phonons"
    spec = PhononTask
    shares_structures = True
    result = PhononResult

    def check(self, spec: PhononTask, atoms: Atoms, structure: StructureSpec) -> None:
        super().check(spec, atoms, structure)
        check_periodic(atoms, "task.kind: phonons needs")
        matrix = supercell_matrix(atoms, spec)
        n_atoms = int(round(len(atoms) * abs(np.linalg.det(matrix))))
        field = "supercell" if spec.supercell is not None else "supercell_min_length_A"
        check_atom_count(n_atoms, structure.max_atoms, f"task.{field}: the phonon supercell {matrix.tolist()} has")

    def prepare(self, atoms: Atoms, spec: PhononTask) -> Prepared:
        return prerelaxed(atoms, spec.relax)

    def needs_stress(self, spec: PhononTask) -> bool:
        return spec.relax is not None and spec.relax.relax_cell

    def run(self, context) -> PhononResult:
        return run(context)

    def report_line(self, entry: dict, result: PhononResult) -> str:
        gamma = ", ".join(f"{f:.2f}" for f in result.frequencies_THz)
        line = f"  {entry['file']:<24} Γ frequencies (THz): {gamma}; max {result.max_frequency_THz:.2f} THz"
        if result.imaginary_modes:
            line += f"; IMAGINARY modes at {', '.join(result.imaginary_qpoints)}"
        return line + (f"; plot {entry['plot']}" if entry.get("plot") else "")

    def comparison_line(self, name: str, raw: PhononResult, corrected: PhononResult,
                        scale: float | None) -> str | None:
        expected = expected_ratio("frequency", scale)
        if expected is None or not raw.mean_frequency_THz:
            return None
        ratio = corrected.mean_frequency_THz / raw.mean_frequency_THz
        return (f"  phonons: corrected/raw mean frequency = {ratio:.4f} "
                f"(exact for the scalar correction: {EXPECTED_RATIO_TEXT['frequency']} = {expected:.4f})")

    def finalize(self, out_dir, entries: list[dict]) -> dict[str, object]:
        finalize(out_dir, entries)
        return {}

    def compare_section(self, jobs, options):
        """Mean and Γ frequencies, the per-mode ratio, bands and DOS overlaid (driver.tasks.phonon_compare)."""
        from driver.tasks.phonon_compare import compare_section

        return compare_section(jobs, {job.name: read_result(PhononResult, job.path) for job in jobs}, options)


TASK = PhononTaskKind()
