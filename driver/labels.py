"""Read DFT-labelled structures (reference energies and forces) from any file ASE reads.

Reference values come from named keys (extended XYZ `REF_energy`/`REF_forces` and the like) or,
when no key is given and none of the usual names is present, from the calculator results ASE
attaches while reading (extended XYZ `energy`/`forces`, VASP `vasprun.xml`/`OUTCAR`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from driver.errors import InputError
from driver.structure import read_with_ase

FORCE_KEYS = ("REF_forces", "DFT_forces", "dft_forces", "ref_forces")
ENERGY_KEYS = ("REF_energy", "DFT_energy", "dft_energy", "ref_energy")


@dataclass
class LabelledStructure:
    atoms: Atoms
    forces_eV_A: np.ndarray
    energy_eV: float | None
    source: str  # "file:frame", for messages

    @property
    def formula(self) -> str:
        return self.atoms.get_chemical_formula(mode="hill")


def _reference_forces(atoms: Atoms, key: str | None) -> np.ndarray | None:
    for name in ([key] if key else FORCE_KEYS):
        if name in atoms.arrays:
            return np.asarray(atoms.arrays[name], dtype=float)
    if key is None and atoms.calc is not None and "forces" in atoms.calc.results:
        return np.asarray(atoms.calc.results["forces"], dtype=float)
    return None


def _reference_energy(atoms: Atoms, key: str | None) -> float | None:
    for name in ([key] if key else ENERGY_KEYS):
        if name in atoms.info:
            return _finite_energy(atoms.info[name], name)
    if key is None and atoms.calc is not None and "energy" in atoms.calc.results:
        return _finite_energy(atoms.calc.results["energy"], "energy")
    return None


def _finite_energy(value, name: str) -> float:
    """A reference energy as a finite float; anything else is an InputError (its frame is added by the caller)."""
    try:
        energy = float(value)
    except (TypeError, ValueError):
        raise InputError(f"reference energy {name!r} must be a number, got {value!r}") from None
    if not np.isfinite(energy):
        raise InputError(f"reference energy {name!r} must be finite, got {energy!r}")
    return energy


def read_labels(files: Sequence[str | Path], energy_key: str | None = None, forces_key: str | None = None,
                index: str = ":") -> list[LabelledStructure]:
    """Every frame of every file, with its reference forces (required) and energy (optional)."""
    structures = []
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise InputError(f"{path}: labels file not found")
        frames = read_with_ase(path, index, "cannot read labelled structures")
        frames = frames if isinstance(frames, list) else [frames]
        if not frames:
            raise InputError(f"{path}: holds no structures")
        for number, atoms in enumerate(frames):
            source = f"{path}:{number}"
            try:
                forces = _reference_forces(atoms, forces_key)
            except (TypeError, ValueError):
                raise InputError(f"{path}: frame {number}: reference forces are not numbers") from None
            if forces is None:
                wanted = f"array {forces_key!r}" if forces_key else f"forces ({', '.join(FORCE_KEYS)} or calculator results)"
                raise InputError(f"{path}: frame {number}: no reference {wanted}")
            if forces.shape != (len(atoms), 3) or not np.isfinite(forces).all():
                raise InputError(f"{path}: frame {number}: reference forces must be finite, shape ({len(atoms)}, 3)")
            try:
                energy = _reference_energy(atoms, energy_key)
            except InputError as exc:
                raise InputError(f"{path}: frame {number}: {exc}") from None
            if energy_key and energy is None:
                raise InputError(f"{path}: frame {number}: no reference energy {energy_key!r} in its info")
            bare = atoms.copy()
            bare.calc = None
            structures.append(LabelledStructure(bare, forces, energy, source))
    return structures


def files_sha256(files: Sequence[str | Path]) -> str:
    """One hash over the label files in the given order: what the fit saw."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(Path(file).read_bytes())
    return digest.hexdigest()
