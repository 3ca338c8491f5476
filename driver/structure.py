"""Read the starting structure with ASE, so every format ASE knows works."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.io import read

from driver.errors import InputError
from driver.recipe import StructureSpec


def load_structure(spec: StructureSpec) -> Atoms:
    try:
        atoms = read(spec.file, index=spec.index)
    except Exception as exc:  # ASE raises many types for unreadable files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{spec.file}: structure.file: cannot read structure ({reason})") from None
    if not isinstance(atoms, Atoms) or len(atoms) == 0:
        raise InputError(f"{spec.file}: structure.file: holds no atoms")
    if atoms.pbc.any() and abs(np.linalg.det(atoms.cell[:])) < 1e-6:
        raise InputError(f"{spec.file}: structure.file: periodic structure without a cell")
    atoms.calc = None
    if spec.supercell is not None:
        atoms = atoms.repeat(spec.supercell)
    return atoms
