"""H5MD 1.1 trajectory files, written frame by frame while a job runs.

Layout (what DESIGN.md promises and MDAnalysis's H5MD reader opens):
    /h5md                      version, author, creator
    /particles/all/box         dimension, boundary; edges/{step,time,value}
    /particles/all/species     atomic numbers (time-independent)
    /particles/all/{position,velocity,force}/{step,time,value}
    /observables/<name>/{step,time,value}
    /parameters                provenance as attributes
    /results/<task>            task results
The root attribute `status` reads `running` until the job ends; only `completed` files are whole.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np
from ase import Atoms, units

from driver import __version__

UNITS = {
    "position": "Angstrom",
    "velocity": "Angstrom fs-1",
    "force": "eV Angstrom-1",
    "time": "fs",
    "edges": "Angstrom",
}
OBSERVABLE_UNITS = {
    "potential_energy": "eV",
    "kinetic_energy": "eV",
    "total_energy": "eV",
    "conserved_energy": "eV",
    "temperature": "K",
    "volume": "Angstrom3",
    "pressure": "GPa",
}

_CHUNK_BYTES = 1 << 20


class H5MDWriter:
    """Stream frames of one job into an extendable, chunked H5MD file."""

    def __init__(
        self,
        path: str | Path,
        atoms: Atoms,
        *,
        provenance: Mapping[str, object],
        flush_every: int = 10,
        compression: str | None = None,
        velocities: bool = True,
        forces: bool = True,
    ):
        self.path = Path(path)
        self.flush_every = flush_every
        self.compression = compression
        self.n_atoms = len(atoms)
        self.frames = 0
        self.file = h5py.File(self.path, "w")
        self.file.attrs["status"] = "running"
        self._write_header(atoms, provenance)
        particles = self.file.require_group("particles/all")
        self._series: dict[str, h5py.Group] = {}
        self._add_series("position", particles, (self.n_atoms, 3), UNITS["position"])
        if velocities:
            self._add_series("velocity", particles, (self.n_atoms, 3), UNITS["velocity"])
        if forces:
            self._add_series("force", particles, (self.n_atoms, 3), UNITS["force"])
        self._add_series("box/edges", particles, (3, 3), UNITS["edges"])

    def _write_header(self, atoms: Atoms, provenance: Mapping[str, object]) -> None:
        h5md = self.file.create_group("h5md")
        h5md.attrs["version"] = np.array([1, 1])
        h5md.create_group("author").attrs["name"] = "umlip-driver user"
        creator = h5md.create_group("creator")
        creator.attrs["name"] = "umlip-driver"
        creator.attrs["version"] = __version__
        particles = self.file.create_group("particles/all")
        box = particles.create_group("box")
        box.attrs["dimension"] = 3
        box.attrs["boundary"] = np.array(
            ["periodic" if p else "none" for p in atoms.pbc], dtype=h5py.string_dtype()
        )
        species = particles.create_dataset("species", data=atoms.numbers.astype(np.int32))
        species.attrs["symbols"] = json.dumps(atoms.get_chemical_symbols())
        masses = particles.create_dataset("mass", data=atoms.get_masses())
        masses.attrs["unit"] = "u"
        self.write_attributes("parameters", provenance)

    def _add_series(self, name: str, parent: h5py.Group, shape: tuple[int, ...], unit: str | None) -> h5py.Group:
        """A time-dependent H5MD element; its step/time are hard links to the position's."""
        group = parent.create_group(name)
        frames_per_chunk = max(1, min(self.flush_every, _CHUNK_BYTES // (8 * int(np.prod(shape)))))
        value = group.create_dataset(
            "value", shape=(0, *shape), maxshape=(None, *shape), dtype="f8",
            chunks=(frames_per_chunk, *shape), compression=self.compression,
        )
        if unit:
            value.attrs["unit"] = unit
        clock = self._series.get("position")
        if clock is None:
            group.create_dataset("step", shape=(0,), maxshape=(None,), dtype="i8", chunks=(1024,))
            time = group.create_dataset("time", shape=(0,), maxshape=(None,), dtype="f8", chunks=(1024,))
            time.attrs["unit"] = UNITS["time"]
        else:
            group["step"] = clock["step"]
            group["time"] = clock["time"]
        self._series[name] = group
        return group

    def append(self, step: int, time_fs: float, atoms: Atoms, observables: Mapping[str, float]) -> None:
        """Add one frame; values come from the atoms' calculator cache, so nothing is recomputed."""
        if self.frames == 0:
            for name in observables:
                self._add_series(name, self.file.require_group("observables"), (), OBSERVABLE_UNITS.get(name))
        index = self.frames
        clock = self._series["position"]
        for dataset, value in ((clock["step"], step), (clock["time"], time_fs)):
            dataset.resize((index + 1,))
            dataset[index] = value
        frame_values = {
            "position": atoms.get_positions(),
            "box/edges": atoms.cell[:],
            **{name: observables[name] for name in observables},
        }
        if "velocity" in self._series:
            frame_values["velocity"] = atoms.get_velocities() * units.fs
        if "force" in self._series:
            frame_values["force"] = atoms.get_forces()
        for name, value in frame_values.items():
            dataset = self._series[name]["value"]
            dataset.resize((index + 1, *dataset.shape[1:]))
            dataset[index] = value
        self.frames += 1
        if self.frames % self.flush_every == 0:
            self.file.flush()

    def write_attributes(self, group_name: str, values: Mapping[str, object]) -> None:
        group = self.file.require_group(group_name)
        for key, value in values.items():
            group.attrs[key] = _attribute(value)

    def write_results(self, task: str, scalars: Mapping[str, object], arrays: Mapping[str, np.ndarray] | None = None) -> None:
        group = self.file.require_group(f"results/{task}")
        self.write_attributes(group.name, scalars)
        for key, array in (arrays or {}).items():
            if key in group:
                del group[key]
            group.create_dataset(key, data=array)

    def _drop_partial_frame(self) -> None:
        """An exception or signal inside `append` can leave step/time or some values one frame
        longer than the others (or a zero-filled frame); keep only the frames fully written."""
        for group in self._series.values():
            for name in ("step", "time", "value"):
                dataset = group[name]
                if dataset.shape[0] > self.frames:
                    dataset.resize((self.frames, *dataset.shape[1:]))

    def close(self, status: str) -> None:
        """Record how the job ended, then flush and close; safe to call twice."""
        if not self.file.id.valid:
            return
        self._drop_partial_frame()
        self.file.attrs["status"] = status
        self.file.flush()
        self.file.close()


def _attribute(value: object):
    if value is None:
        return "none"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    return value
