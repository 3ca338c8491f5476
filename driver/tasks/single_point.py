"""Single points (`task.kind: single_point`): energy, forces (and stress on request) of every frame
of a structure file or of an earlier run's H5MD trajectory, raw and corrected, and, where the file
carries reference labels (extended XYZ keys, VASP output, ...), the errors against them: how users
re-score a trajectory or check a model on their own DFT set. One job per variant.

Frames are evaluated in chunks through the job's potential (batched where the model batches);
each chunk is a restart point (driver.points), so `--resume` evaluates only the missing frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
from ase import Atoms
from pydantic import Field, ValidationInfo, field_validator

from driver.errors import InputError
from driver.h5read import reading
from driver.labels import reference_energy, reference_forces
from driver.points import PointStore, each_point
from driver.potential import Property, check_elements
from driver.results import JobStatus, TaskResult, array, present, scalar
from driver.schema import Bool, Strict, bounded, resolve_existing
from driver.structure import check_finite_geometry, read_frames
from driver.tasks import Task

if TYPE_CHECKING:
    from driver.specs import StructureSpec

log = logging.getLogger(__name__)

class SinglePointTask(Strict):
    """Evaluate every frame of a file; one job per variant."""

    kind: Literal["single_point"]
    frames: str | None = Field(None, description="file of frames (any ASE format, or this driver's H5MD); "
                                                 "default: the recipe's structure file")
    index: str = Field(":", description="frames to take, ASE's index syntax (e.g. ':', '::10', '-1')")
    stress: Bool = Field(False, description="also the stress (needs periodic frames)")
    energy_key: str | None = Field(None, description="info key of the reference energy (default: the usual names)")
    forces_key: str | None = Field(None, description="array key of the reference forces (default: the usual names)")
    chunk_size: bounded(int, ge=1, le=10**5) = Field(16, description="frames per model call and per restart point")
    batched: Bool | Literal["auto"] = Field("auto", description="many frames per model call; auto: timed both "
                                            "ways on the first call, the faster kept")

    @field_validator("frames")
    @classmethod
    def _frames_exist(cls, value: str | None, info: ValidationInfo) -> str | None:
        return resolve_existing(value, info, "frames file")


def read_labelled_frames(path: Path, index: str) -> list[Atoms]:
    """Every frame `index` selects, with whatever labels the file carries (left on the atoms)."""
    frames = read_frames(path, index, "task.frames: cannot read frames")
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise InputError(f"{path}: task.frames: holds no frames (index {index!r})")
    for number, atoms in enumerate(frames):
        check_finite_geometry(atoms, f"{path}: task.frames: frame {number}")
    return frames


def labels_of(frames: list[Atoms], spec: SinglePointTask) -> tuple[list[np.ndarray | None], list[float | None]]:
    forces = [reference_forces(atoms, spec.forces_key) for atoms in frames]
    energies = [reference_energy(atoms, spec.energy_key) for atoms in frames]
    return forces, energies


@dataclass
class SinglePointResult(TaskResult):
    """Energies, forces (and stresses) of every frame; errors against the frames' own labels
    where they carry them (the optional fields, absent otherwise)."""

    kind: ClassVar[str] = "single_point"
    n_frames: int = scalar()
    frames_file: str = scalar()
    index: str | int = scalar()
    energy_undefined_frames: int = scalar()  # frames of another composition: no corrected energy
    mean_energy_per_atom_eV: float | None = scalar("eV")
    max_force_eV_A: float = scalar("eV Angstrom-1")
    reference_forces_frames: int = scalar()
    reference_energy_frames: int = scalar()
    force_mae_eV_A: float | None = scalar("eV Angstrom-1", optional=True)
    force_rmse_eV_A: float | None = scalar("eV Angstrom-1", optional=True)
    force_slope: float | None = scalar(optional=True)
    energy_mae_per_atom_eV: float | None = scalar("eV", optional=True)
    energy_rmse_per_atom_eV: float | None = scalar("eV", optional=True)
    relative_energy_mae_per_atom_eV: float | None = scalar("eV", optional=True)
    energies_eV: np.ndarray = array("eV")
    forces_eV_A: np.ndarray = array("eV Angstrom-1")
    n_atoms: np.ndarray = array("1")
    stresses_eV_A3: np.ndarray | None = array("eV Angstrom-3")
    reference_forces_eV_A: np.ndarray | None = array("eV Angstrom-1")
    labelled_forces_eV_A: np.ndarray | None = array("eV Angstrom-1")


def run(context) -> SinglePointResult:
    spec: SinglePointTask = context.spec
    path = Path(spec.frames or context.structure_file)
    frames = read_labelled_frames(path, spec.index)
    ref_forces, ref_energies = labels_of(frames, spec)
    for atoms in frames:
        atoms.calc = None
    properties: tuple[Property, ...] = ("energy", "forces", "stress") if spec.stress else ("energy", "forces")
    chunks = [range(start, min(start + spec.chunk_size, len(frames))) for start in range(0, len(frames), spec.chunk_size)]

    def compute(number: int) -> dict:
        results = context.potential.evaluate([frames[i] for i in chunks[number]], properties, batched=spec.batched)
        values = {"energies_eV": np.array([r.energy for r in results]),
                  "forces_eV_A": np.concatenate([r.forces for r in results])}
        if spec.stress:
            values["stresses_eV_A3"] = np.array([r.stress for r in results])
        return values

    points = each_point(PointStore(context.writer), [f"chunk_{i:06d}" for i in range(len(chunks))], compute, log,
                        f"{context.job.name}: {len(frames)} frames of {path.name}",
                        lambda values: f"E {values['energies_eV'][-1]:.4f} eV")
    energies = np.concatenate([p["energies_eV"] for p in points])
    undefined = [i for i, atoms in enumerate(frames) if not context.potential.energy_is_defined(atoms, context.atoms)]
    if undefined:
        log.warning("%s: %d of %d frames have another composition than the reference structure: their "
                    "corrected energies are undefined (stored as NaN); forces are corrected as usual",
                    context.job.name, len(undefined), len(frames))
        energies[undefined] = np.nan
    forces = np.concatenate([p["forces_eV_A"] for p in points])
    n_atoms = np.array([len(atoms) for atoms in frames])
    arrays = {"energies_eV": energies, "forces_eV_A": forces, "n_atoms": n_atoms}
    if spec.stress:
        arrays["stresses_eV_A3"] = np.concatenate([p["stresses_eV_A3"] for p in points])
    summary: dict[str, object] = {"n_frames": len(frames), "frames_file": str(path), "index": spec.index,
                                  "energy_undefined_frames": len(undefined),
                                  "mean_energy_per_atom_eV": float(np.nanmean(energies / n_atoms))
                                  if len(undefined) < len(frames) else None,
                                  "max_force_eV_A": float(np.linalg.norm(forces, axis=1).max())}
    summary.update(errors_against_labels(energies, forces, n_atoms, ref_energies, ref_forces, arrays))
    return SinglePointResult(**summary, **arrays)


def errors_against_labels(energies: np.ndarray, forces: np.ndarray, n_atoms: np.ndarray,
                          ref_energies: list[float | None], ref_forces: list[np.ndarray | None], arrays: dict) -> dict:
    """MAE/RMSE of forces and energies per atom, and the force slope, on the frames that have labels."""
    found: dict[str, object] = {"reference_forces_frames": sum(f is not None for f in ref_forces),
                                "reference_energy_frames": sum(e is not None for e in ref_energies)}
    offsets = np.concatenate([[0], np.cumsum(n_atoms)])
    labelled = [i for i, f in enumerate(ref_forces) if f is not None]
    if labelled:
        model = np.concatenate([forces[offsets[i]:offsets[i + 1]] for i in labelled])
        reference = np.concatenate([ref_forces[i] for i in labelled])
        difference = model - reference
        denominator = float(np.sum(reference * reference))
        found.update(force_mae_eV_A=float(np.mean(np.abs(difference))),
                     force_rmse_eV_A=float(np.sqrt(np.mean(difference**2))),
                     force_slope=float(np.sum(model * reference) / denominator) if denominator > 0 else None)
        arrays["reference_forces_eV_A"] = reference
        arrays["labelled_forces_eV_A"] = model
    with_energy = [i for i, e in enumerate(ref_energies) if e is not None and np.isfinite(energies[i])]
    if with_energy:
        per_atom = np.array([(energies[i] - ref_energies[i]) / n_atoms[i] for i in with_energy])
        found.update(energy_mae_per_atom_eV=float(np.mean(np.abs(per_atom))),
                     energy_rmse_per_atom_eV=float(np.sqrt(np.mean(per_atom**2))))
        if len(with_energy) > 1:  # relative energies: a constant offset between model and DFT does not count
            relative = per_atom - per_atom.mean()
            found["relative_energy_mae_per_atom_eV"] = float(np.mean(np.abs(relative)))
    return found


def finalize(out_dir: Path, entries: list[dict]) -> None:
    """A parity plot of model against reference forces (every labelled job overlaid): parity.png."""
    labelled = [e for e in entries if e["status"] == JobStatus.COMPLETED and e.get("reference_forces_frames")]
    if not labelled:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    limit = 0.0
    for entry in labelled:
        with reading(out_dir / entry["file"]) as handle:
            reference = handle["results/single_point/reference_forces_eV_A"][()].ravel()
            model = handle["results/single_point/labelled_forces_eV_A"][()].ravel()
        axis.scatter(reference, model, s=3, alpha=0.4, label=f"{entry['job']}: MAE {entry['force_mae_eV_A']:.3f} eV/Å")
        limit = max(limit, float(np.abs(reference).max()), float(np.abs(model).max()))
    limit *= 1.05
    axis.plot([-limit, limit], [-limit, limit], "k--", lw=1, label="y = x")
    axis.set(xlabel="reference force component (eV/Å)", ylabel="model force component (eV/Å)",
             xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal")
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(out_dir / "parity.png")
    plt.close(figure)
    for entry in labelled:
        entry["plot"] = "parity.png"


def _slope(value: float | None) -> str:
    return f"{value:.3f}" if present(value) else "undefined (zero reference forces)"


class SinglePointTaskKind(Task[SinglePointTask, SinglePointResult]):
    kind = "single_point"
    spec = SinglePointTask
    result = SinglePointResult

    def check(self, spec: SinglePointTask, atoms: Atoms, structure: StructureSpec) -> None:
        """The frames must be readable before any model loads (driver validate reads them too)."""
        super().check(spec, atoms, structure)
        if spec.frames:
            read_labelled_frames(Path(spec.frames), spec.index)

    def check_elements(self, spec: SinglePointTask, potential, atoms: Atoms, structure: StructureSpec) -> None:
        """Every frame, not only the structure: a frames file may hold other compositions."""
        super().check_elements(spec, potential, atoms, structure)
        if spec.frames:
            for number, frame in enumerate(read_labelled_frames(Path(spec.frames), spec.index)):
                check_elements(potential, frame, f"{spec.frames}: task.frames: frame {number}")

    def needs_stress(self, spec: SinglePointTask) -> bool:
        return spec.stress

    def run(self, context) -> SinglePointResult:
        return run(context)

    def report_line(self, entry: dict, result: SinglePointResult) -> str:
        mean = result.mean_energy_per_atom_eV
        line = (f"  {entry['file']:<24} {result.n_frames} frames, <E>/atom "
                f"{'undefined' if mean is None else f'{mean:.4f} eV'}, max |F| {result.max_force_eV_A:.3f} eV/Å")
        if present(result.force_mae_eV_A):
            line += (f"; vs reference ({result.reference_forces_frames} frames): force MAE "
                     f"{result.force_mae_eV_A:.4f} eV/Å, slope {_slope(result.force_slope)}")
        if present(result.energy_mae_per_atom_eV):
            line += f", energy MAE {1000 * result.energy_mae_per_atom_eV:.1f} meV/atom"
        if result.energy_undefined_frames:
            line += f" ({result.energy_undefined_frames} frames of another composition: no corrected energy)"
        return line + (f"; plot {entry['plot']}" if entry.get("plot") else "")

    def comparison_line(self, name: str, raw: SinglePointResult, corrected: SinglePointResult,
                        scale: float | None) -> str | None:
        if not (present(raw.force_mae_eV_A) and present(corrected.force_mae_eV_A)):
            return None
        line = (f"  single_point: force MAE vs reference {raw.force_mae_eV_A:.4f} (raw) -> "
                f"{corrected.force_mae_eV_A:.4f} eV/Å (corrected); slope {_slope(raw.force_slope)} -> "
                f"{_slope(corrected.force_slope)} (1 is the reference's stiffness)")
        if corrected.force_mae_eV_A > raw.force_mae_eV_A:
            line += ("\n  WARNING: the correction makes these forces WORSE: its s was not fitted on structures like "
                     "these (driver fit on their labels gives theirs)")
        return line

    def finalize(self, out_dir, entries: list[dict]) -> dict[str, object]:
        finalize(out_dir, entries)
        return {}


TASK = SinglePointTaskKind()
