"""Full MD state in the job's own HDF5 file, so a killed job continues exactly where it was.

The state is what the next step needs and nothing else can give back: positions, momenta, cell,
the step count, the integrator's thermostat/barostat variables and its random-number generator.
The integrator's variables are named per ensemble in driver.ensembles.ENSEMBLES (everything
else it holds is rebuilt from the recipe when the job resumes); a name ASE no longer has is an
error at the first checkpoint, never a variable skipped in silence, and tests/test_checkpoint.py
fails when an integrator gains a variable that changes as it runs and is not listed.

Two slots are written in turn, each sealed by a sha256 written last: a slot damaged in the file
leaves the other, older one valid. Reading takes the newest valid slot. Each checkpoint is one
journal record (driver.journal) first, so a kill in the middle of writing it loses nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import h5py
import numpy as np
from ase import Atoms
from ase.md.md import MolecularDynamics

from driver.ensembles import of_integrator
from driver.errors import DriverError

GROUP = "checkpoint"
_SLOTS = ("a", "b")


class CheckpointError(DriverError):
    """A checkpoint exists but cannot be trusted; resuming from it would give wrong physics."""

    exit_code = 2


@dataclass
class MDState:
    step: int
    frames: int  # trajectory frames written up to and including this step
    positions: np.ndarray
    momenta: np.ndarray
    cell: np.ndarray
    integrator: dict[str, np.ndarray] = field(default_factory=dict)  # dotted attribute -> value
    rng: dict | None = None  # numpy bit-generator state


def state_fields(integrator: MolecularDynamics) -> tuple[str, ...]:
    ensemble = of_integrator(integrator)
    if ensemble is None:
        raise CheckpointError(f"no checkpoint layout for ASE integrator {type(integrator).__name__}; "
                              "add its ensemble to driver.ensembles.ENSEMBLES")
    return ensemble.state_fields


def _owner_and_name(integrator: MolecularDynamics, key: str) -> tuple[object, str]:
    *path, name = key.split(".")
    owner = integrator
    for part in path:
        owner = getattr(owner, part)
    return owner, name


def _read_field(integrator: MolecularDynamics, key: str) -> np.ndarray:
    owner, name = _owner_and_name(integrator, key)
    try:
        value = getattr(owner, name)
    except AttributeError:
        raise CheckpointError(f"{type(integrator).__name__} has no attribute {key!r} (renamed in this ASE "
                              "version?); update driver.ensembles.ENSEMBLES") from None
    return np.array(value, dtype=np.float64)


def capture(atoms: Atoms, integrator: MolecularDynamics, frames: int) -> MDState:
    rng = getattr(integrator, "rng", None)
    return MDState(
        step=int(integrator.nsteps), frames=frames,
        positions=atoms.get_positions(), momenta=atoms.get_momenta(), cell=atoms.cell[:].copy(),
        integrator={key: _read_field(integrator, key) for key in state_fields(integrator)},
        rng=rng.bit_generator.state if isinstance(rng, np.random.Generator) else None,
    )


def restore_atoms(state: MDState, atoms: Atoms) -> None:
    """Before the integrator is built: some read the atoms when constructed (Bussi refuses zero
    kinetic energy, MTK takes its reference volume)."""
    atoms.set_cell(state.cell, scale_atoms=False)
    atoms.set_positions(state.positions, apply_constraint=False)
    atoms.set_momenta(state.momenta, apply_constraint=False)


def restore_integrator(state: MDState, integrator: MolecularDynamics) -> None:
    """Put a fresh integrator (built as for a new run, on restored atoms) back into `state`."""
    expected = set(state_fields(integrator))
    if set(state.integrator) != expected:
        raise CheckpointError(f"checkpoint holds integrator fields {sorted(state.integrator)}, "
                              f"{type(integrator).__name__} needs {sorted(expected)}")
    for key, value in state.integrator.items():
        _read_field(integrator, key)  # present in this ASE, or a CheckpointError naming it
        owner, name = _owner_and_name(integrator, key)
        current = getattr(owner, name)
        if isinstance(current, np.ndarray):
            if current.shape != value.shape:
                raise CheckpointError(f"checkpoint integrator.{key} has shape {value.shape}, "
                                      f"the integrator expects {current.shape}")
            current[...] = value
        else:
            setattr(owner, name, value.copy() if value.ndim else float(value))
    if state.rng is not None:
        integrator.rng.bit_generator.state = state.rng
    integrator.nsteps = state.step


def _digest(arrays: dict[str, np.ndarray], header: dict) -> str:
    sha = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for name in sorted(arrays):
        sha.update(name.encode())
        sha.update(np.ascontiguousarray(arrays[name], dtype=np.float64).tobytes())
    return sha.hexdigest()


def _arrays(state: MDState) -> dict[str, np.ndarray]:
    return {"positions": state.positions, "momenta": state.momenta, "cell": state.cell,
            **{f"integrator/{key}": value for key, value in state.integrator.items()}}


def _header(state: MDState) -> dict:
    return {"step": state.step, "frames": state.frames, "rng": state.rng}


class Checkpointer:
    """Writes a job's checkpoints through its writer (driver.output: journaled, fsynced),
    alternating between the two slots."""

    def __init__(self, writer):
        self.writer = writer
        file = writer.file
        newest = _newest_valid(file[GROUP], file.filename, strict=False) if GROUP in file else None
        self._next_slot = _SLOTS[1] if newest is not None and newest[0] == _SLOTS[0] else _SLOTS[0]

    def write(self, state: MDState) -> None:
        """Overwrite the older slot in place (the file does not grow), sealed by its checksum."""
        arrays = {name: np.asarray(value, dtype=np.float64) for name, value in _arrays(state).items()}
        header = _header(state)
        tree = {"datasets": {name: {"data": value} for name, value in arrays.items()},
                "attrs": {"header": json.dumps(header), "sha256": _digest(arrays, header)}}
        self.writer.put_tree(f"{GROUP}/{self._next_slot}", tree, in_place=True)
        self._next_slot = _SLOTS[1 - _SLOTS.index(self._next_slot)]


def _read_slot(slot: h5py.Group) -> tuple[MDState, bool]:
    header = json.loads(slot.attrs["header"])
    arrays: dict[str, np.ndarray] = {}
    slot.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    valid = slot.attrs.get("sha256", "") == _digest(arrays, header)
    integrator = {name.removeprefix("integrator/"): np.asarray(value)
                  for name, value in arrays.items() if name.startswith("integrator/")}
    state = MDState(step=int(header["step"]), frames=int(header["frames"]), positions=arrays["positions"],
                    momenta=arrays["momenta"], cell=arrays["cell"], integrator=integrator, rng=header["rng"])
    return state, valid


def _newest_valid(root: h5py.Group, filename: str, strict: bool) -> tuple[str, MDState] | None:
    """The newest sealed slot. `strict`: slots that exist but none valid is an error."""
    valid: list[tuple[str, MDState]] = []
    broken: list[str] = []
    for name in _SLOTS:
        if name not in root:
            continue
        try:
            state, ok = _read_slot(root[name])
        except (KeyError, ValueError, OSError, TypeError):
            ok = False
        if ok:
            valid.append((name, state))
        else:
            broken.append(name)
    if not valid:
        if strict and broken:
            raise CheckpointError(f"{filename}: checkpoint damaged (checksum mismatch or unreadable in "
                                  f"slot{'s' if len(broken) > 1 else ''} {', '.join(broken)}); "
                                  "run with --overwrite to start this job again")
        return None
    return max(valid, key=lambda item: item[1].step)


def read_latest(file: h5py.File) -> MDState | None:
    """The newest valid checkpoint, None when the job never wrote one."""
    if GROUP not in file:
        return None
    newest = _newest_valid(file[GROUP], file.filename, strict=True)
    return newest[1] if newest else None
