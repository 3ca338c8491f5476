"""Read the starting structure with ASE, so every format ASE knows works."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
from ase import Atoms
from ase.io import read

from driver.errors import InputError, first_line

if TYPE_CHECKING:
    from driver.specs import StructureSpec


def read_with_ase(path, index, what: str):
    """ase.io.read, with any failure (ASE raises many types) as one InputError line:
    '<path>: <what> (<reason>)'."""
    try:
        return read(path, index=index)
    except (StopIteration, IndexError):  # ASE's way of saying the index selects no frame
        raise InputError(f"{path}: {what} (no frame {index!r} in the file)") from None
    except Exception as exc:
        raise InputError(f"{path}: {what} ({first_line(exc)})") from None


H5MD_SUFFIXES = (".h5", ".h5md", ".hdf5")


def read_frames(path: str | Path, index: str | int, what: str) -> Atoms | list[Atoms]:
    """Frames of any file ASE reads or of this driver's H5MD job files (an earlier run's
    trajectory), `index` in ASE's syntax: an int gives one Atoms, a slice string a list."""
    path = Path(path)
    if path.suffix.lower() not in H5MD_SUFFIXES or not h5py.is_hdf5(path):
        return read_with_ase(path, index, what)
    from driver.trajectory import read_trajectory

    trajectory = read_trajectory(path)
    numbers = range(len(trajectory.positions_A))
    try:
        if isinstance(index, int) or ":" not in index:
            return trajectory.frame(numbers[int(index)])
        return [trajectory.frame(i) for i in numbers[slice(*[int(part) if part else None for part in index.split(":")])]]
    except (IndexError, TypeError, ValueError):
        raise InputError(f"{path}: {what} (no frame {index!r} among {len(numbers)})") from None


def check_finite_geometry(atoms: Atoms, where: str) -> None:
    """Refuse NaN or infinite positions or cell vectors (a corrupted or hand-edited file), naming
    the first atom or cell vector: they would pass every other check and explode at step 0."""
    bad_atoms = np.flatnonzero(~np.isfinite(atoms.positions).all(axis=1))
    if len(bad_atoms):
        raise InputError(f"{where}: atom {bad_atoms[0]} ({atoms[bad_atoms[0]].symbol}) has a non-finite position "
                         f"{atoms.positions[bad_atoms[0]].tolist()}")
    bad_vectors = np.flatnonzero(~np.isfinite(atoms.cell[:]).all(axis=1))
    if len(bad_vectors):
        raise InputError(f"{where}: cell vector {bad_vectors[0]} is not finite {atoms.cell[bad_vectors[0]].tolist()}")


def load_structure(spec: StructureSpec) -> Atoms:
    atoms = read_frames(spec.file, spec.index, "structure.file: cannot read structure")
    if not isinstance(atoms, Atoms) or len(atoms) == 0:
        raise InputError(f"{spec.file}: structure.file: holds no atoms")
    check_finite_geometry(atoms, f"{spec.file}: structure.file")
    if atoms.pbc.any() and abs(np.linalg.det(atoms.cell[:])) < 1e-6:
        raise InputError(f"{spec.file}: structure.file: periodic structure without a cell")
    atoms.calc = None
    if spec.supercell is not None:
        n_atoms = len(atoms) * int(np.prod(spec.supercell))
        check_atom_count(n_atoms, spec.max_atoms, f"{spec.file}: structure.supercell: {list(spec.supercell)} makes")
        atoms = atoms.repeat(spec.supercell)
    else:
        check_atom_count(len(atoms), spec.max_atoms, f"{spec.file}: structure.file: holds")
    return atoms


def check_atom_count(n_atoms: int, max_atoms: int, what: str) -> None:
    """Refuse a structure larger than structure.max_atoms (raised in the recipe on purpose)."""
    if n_atoms > max_atoms:
        raise InputError(f"{what} {n_atoms} atoms, more than structure.max_atoms = {max_atoms}; "
                         "raise structure.max_atoms on purpose to run it")


def check_periodic(atoms: Atoms, what: str) -> None:
    """Tasks that strain or repeat the cell need it periodic along all three axes; `what` says
    who needs it ("task.kind: eos needs")."""
    if not atoms.pbc.all():
        raise InputError(f"{what} a structure periodic in all three directions (pbc {atoms.pbc.tolist()})")


def check_min_distance(atoms: Atoms, min_distance_A: float, what: str) -> None:
    """Refuse a structure with two atoms (or an atom and a periodic image) closer than min_distance_A."""
    from ase.neighborlist import neighbor_list

    if len(atoms) == 0:
        return
    i, j, d = neighbor_list("ijd", atoms, min_distance_A)
    if len(d):
        k = int(np.argmin(d))
        pair = f"atoms {i[k]} and {j[k]}" if i[k] != j[k] else f"atom {i[k]} and its periodic image"
        raise InputError(f"{what}: {pair} are {d[k]:.3f} Å apart, closer than min_distance_A = {min_distance_A:g} Å")
