"""Read DFT-labelled structures (reference energies and forces) as users have them:

- any file ASE reads. Reference values come from named keys (extended XYZ `REF_energy`/`REF_forces`
  and the like) or, when no key is given and none of the usual names is present, from the
  calculator results ASE attaches while reading (extended XYZ `energy`/`forces`, VASP
  `vasprun.xml`/`OUTCAR`);
- phonopy's finite-displacement files, read with phonopy's own loader: `phonopy_disp.yaml` with
  `FORCE_SETS` beside it (either file may be named), or a `phonopy_params.yaml`/`phonopy.yaml`
  holding displacements and forces, or the folder holding them. Each displaced supercell is one
  structure (forces only: FORCE_SETS has no energies);
- a VASP NEB folder: `00/ … NN/`, each image's last ionic step from its `vasprun.xml` or `OUTCAR`
  (end-point folders without output, as VASP leaves them, are skipped).
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


def reference_forces(atoms: Atoms, key: str | None) -> np.ndarray | None:
    for name in ([key] if key else FORCE_KEYS):
        if name in atoms.arrays:
            return np.asarray(atoms.arrays[name], dtype=float)
    if key is None and atoms.calc is not None and "forces" in atoms.calc.results:
        return np.asarray(atoms.calc.results["forces"], dtype=float)
    return None


def reference_energy(atoms: Atoms, key: str | None) -> float | None:
    for name in ([key] if key else ENERGY_KEYS):
        if name in atoms.info:
            return _finite_energy(atoms.info[name], name)
    if key is None and atoms.calc is not None and "energy" in atoms.calc.results:
        return _finite_energy(atoms.calc.results["energy"], "energy")
    return None


PHONOPY_YAMLS = ("phonopy_params.yaml", "phonopy_disp.yaml", "phonopy.yaml")
VASP_OUTPUTS = ("vasprun.xml", "OUTCAR")


def _is_phonopy_yaml(path: Path) -> bool:
    if path.suffix not in (".yaml", ".yml"):
        return False
    try:
        with path.open() as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return any(line.startswith("phonopy:") for line in head.splitlines())


def _neb_images(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def label_files(path: Path) -> list[Path]:
    """The files a labels argument stands for (what the fit's hash covers)."""
    if path.is_dir():
        images = _neb_images(path)
        if images:
            return [image / name for image in images for name in VASP_OUTPUTS if (image / name).is_file()]
        return [p for p in (*(path / n for n in PHONOPY_YAMLS), path / "FORCE_SETS") if p.is_file()]
    if path.name == "FORCE_SETS":
        return [p for p in (path.parent / n for n in PHONOPY_YAMLS) if p.is_file()][:1] + [path]
    if _is_phonopy_yaml(path) and (path.parent / "FORCE_SETS").is_file():
        return [path, path.parent / "FORCE_SETS"]
    return [path]


def read_phonopy_labels(path: Path) -> list[LabelledStructure]:
    """Displaced supercells and their DFT forces from phonopy's files (see the module docstring)."""
    import phonopy

    folder = path if path.is_dir() else path.parent
    if path.is_dir() or path.name == "FORCE_SETS":
        yaml_path = next((folder / n for n in PHONOPY_YAMLS if (folder / n).is_file()), None)
        if yaml_path is None:
            raise InputError(f"{path}: no {' or '.join(PHONOPY_YAMLS)} beside it to give the displacements")
    else:
        yaml_path = path
    force_sets = folder / "FORCE_SETS"
    try:
        phonon = phonopy.load(yaml_path, force_sets_filename=force_sets if force_sets.is_file() else None,
                              produce_fc=False, is_nac=False, log_level=0)
    except Exception as exc:  # phonopy raises many kinds; its own message says what is wrong
        raise InputError(f"{yaml_path}: phonopy cannot read it ({type(exc).__name__}: {exc})") from None
    forces = _dataset_values(phonon, "forces")
    if forces is None:
        raise InputError(f"{yaml_path}: holds displacements but no forces, and there is no FORCE_SETS beside it "
                         "(make it with `phonopy -f vasprun.xml ...`)")
    energies = _dataset_values(phonon, "supercell_energies")
    structures = []
    for number, (cell, cell_forces) in enumerate(zip(phonon.supercells_with_displacements, forces, strict=True)):
        atoms = Atoms(cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True)
        atoms.info["config_type"] = "phonopy displacement"
        structures.append(LabelledStructure(atoms, np.asarray(cell_forces, dtype=float),
                                            None if energies is None else float(energies[number]),
                                            f"{yaml_path}:displacement {number + 1}"))
    return structures


def _dataset_values(phonon, name: str):
    """phonopy raises RuntimeError for a quantity its dataset lacks; None here."""
    try:
        return getattr(phonon, name)
    except (RuntimeError, KeyError, TypeError):
        return None


def read_neb_labels(folder: Path, images: list[Path], energy_key: str | None,
                    forces_key: str | None) -> list[LabelledStructure]:
    """Each NEB image's last ionic step, with the forces VASP wrote for it."""
    structures = []
    for number, image in enumerate(images):
        output = next((image / n for n in VASP_OUTPUTS if (image / n).is_file()), None)
        if output is None:
            if number in (0, len(images) - 1):
                continue  # VASP does not compute the end points of a band
            raise InputError(f"{image}: NEB image without {' or '.join(VASP_OUTPUTS)}")
        atoms = read_with_ase(output, -1, "cannot read labelled structures")
        found = _labelled(atoms, output, f"image {image.name}", energy_key, forces_key)
        found.atoms.info["config_type"] = "NEB image"
        found.atoms.info["neb_image"] = int(image.name)
        structures.append(found)
    if not structures:
        raise InputError(f"{folder}: NEB folder whose images hold no {' or '.join(VASP_OUTPUTS)}")
    return structures


def _labelled(atoms: Atoms, path: Path, what: str, energy_key: str | None, forces_key: str | None) -> LabelledStructure:
    try:
        forces = reference_forces(atoms, forces_key)
    except (TypeError, ValueError):
        raise InputError(f"{path}: {what}: reference forces are not numbers") from None
    if forces is None:
        wanted = f"array {forces_key!r}" if forces_key else f"forces ({', '.join(FORCE_KEYS)} or calculator results)"
        raise InputError(f"{path}: {what}: no reference {wanted}")
    if forces.shape != (len(atoms), 3) or not np.isfinite(forces).all():
        raise InputError(f"{path}: {what}: reference forces must be finite, shape ({len(atoms)}, 3)")
    try:
        energy = reference_energy(atoms, energy_key)
    except InputError as exc:
        raise InputError(f"{path}: {what}: {exc}") from None
    if energy_key and energy is None:
        raise InputError(f"{path}: {what}: no reference energy {energy_key!r} in its info")
    bare = atoms.copy()
    bare.calc = None
    return LabelledStructure(bare, forces, energy, f"{path}:{what}")


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
    """Every labelled structure the arguments name, with reference forces (required) and energy (optional)."""
    structures = []
    for file in files:
        path = Path(file)
        if path.is_dir():
            images = _neb_images(path)
            if images:
                structures += read_neb_labels(path, images, energy_key, forces_key)
            elif any((path / n).is_file() for n in PHONOPY_YAMLS):
                structures += read_phonopy_labels(path)
            else:
                raise InputError(f"{path}: a folder of labels must be a VASP NEB folder (00/ .. NN/) or hold "
                                 f"phonopy's files ({', '.join(PHONOPY_YAMLS)}, FORCE_SETS)")
            continue
        if not path.is_file():
            raise InputError(f"{path}: labels file not found")
        if path.name == "FORCE_SETS" or _is_phonopy_yaml(path):
            structures += read_phonopy_labels(path)
            continue
        frames = read_with_ase(path, index, "cannot read labelled structures")
        frames = frames if isinstance(frames, list) else [frames]
        if not frames:
            raise InputError(f"{path}: holds no structures")
        structures += [_labelled(atoms, path, f"frame {number}", energy_key, forces_key)
                       for number, atoms in enumerate(frames)]
    return structures


def files_sha256(files: Sequence[str | Path]) -> str:
    """One hash over the label files in the given order (a folder or phonopy file: the files it stands for)."""
    digest = hashlib.sha256()
    for file in files:
        for part in label_files(Path(file)):
            digest.update(part.read_bytes())
    return digest.hexdigest()
