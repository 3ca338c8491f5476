"""Read the starting structure with ASE, so every format ASE knows works."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms
from ase.io import read

from driver.errors import InputError, first_line

if TYPE_CHECKING:
    from driver.recipe import StructureSpec


def read_with_ase(path, index, what: str):
    """ase.io.read, with any failure (ASE raises many types) as one InputError line:
    '<path>: <what> (<reason>)'."""
    try:
        return read(path, index=index)
    except Exception as exc:
        raise InputError(f"{path}: {what} ({first_line(exc)})") from None


def load_structure(spec: StructureSpec) -> Atoms:
    atoms = read_with_ase(spec.file, spec.index, "structure.file: cannot read structure")
    if not isinstance(atoms, Atoms) or len(atoms) == 0:
        raise InputError(f"{spec.file}: structure.file: holds no atoms")
    if atoms.pbc.any() and abs(np.linalg.det(atoms.cell[:])) < 1e-6:
        raise InputError(f"{spec.file}: structure.file: periodic structure without a cell")
    atoms.calc = None
    if spec.supercell is not None:
        atoms = atoms.repeat(spec.supercell)
    return atoms
