"""H5MD 1.1 trajectory files, written frame by frame while a job runs.

Layout (what DESIGN.md promises and MDAnalysis's H5MD reader opens):
    /h5md                      version, author, creator
    /particles/all/box         dimension, boundary; edges/{step,time,value}
    /particles/all/species     atomic numbers (time-independent)
    /particles/all/{position,velocity,force}/{step,time,value}
    /observables/<name>/{step,time,value}
    /parameters                provenance as attributes
    /results/<task>            task results
    /checkpoint/{a,b}          MD restart state (driver.checkpoint), the newer valid slot wins
The root attribute `status` reads `running` until the job ends; only `completed` files are whole.
With `trajectory=False` (output.trajectory: false) /particles/all holds the first frame only (the
start: positions and box) on a clock of its own, and the observables share theirs; a resumed MD
job reads its restart state from /checkpoint, never from frames.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import h5py
import numpy as np
from ase import Atoms, units

from driver import __version__
from driver.checkpoint import Checkpointer, MDState
from driver.errors import OutputError, first_line
from driver.results import JobStatus, TaskResult, to_attribute

UNITS = {
    "position": "Angstrom",
    "velocity": "Angstrom fs-1",
    "force": "eV Angstrom-1",
    "magnetic_moment": "mu_B",
    "time": "fs",
    "edges": "Angstrom",
}
OBSERVABLE_UNITS = {
    "potential_energy": "eV",
    "kinetic_energy": "eV",
    "total_energy": "eV",
    "conserved_energy": "eV",
    "temperature": "K",
    "target_temperature": "K",
    "volume": "Angstrom3",
    "pressure": "GPa",
    "mean_squared_displacement": "Angstrom2",
}
# The unit of each /results/<task> dataset, by task and name; "1" marks a dimensionless number.
_CHUNK_BYTES = 1 << 20
MIN_FREE_BYTES = 64 << 20  # stop writing below this much free space (see H5MDWriter._ensure_space)


# Files whose writes failed, kept open on purpose: see `H5MDWriter.close`.
ABANDONED: list[H5MDWriter] = []


def _write_failure_is_output_error(method: Callable) -> Callable:
    """h5py reports a full disk, a quota or a file-size limit as OSError or RuntimeError from
    deep inside HDF5; the user needs the file, how far it got and what to do."""

    @functools.wraps(method)
    def wrapper(self: H5MDWriter, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except NotImplementedError:  # a RuntimeError, but ASE's missing property, not a write
            raise
        except (OSError, RuntimeError) as exc:
            self.failed = True
            raise OutputError(f"{self.path}: writing failed after {self.frames} frames ({_os_reason(exc)}); the "
                              "file keeps the frames up to its last flush; free space and continue with --resume"
                              ) from None

    return wrapper


def _os_reason(exc: BaseException) -> str:
    """The operating system's words ('No space left on device') from inside HDF5's message."""
    found = re.search(r"error message = '([^']+)'", str(exc))
    return found.group(1) if found else first_line(exc)


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
        trajectory: bool = True,
        magmoms: bool = False,
    ):
        self.path = Path(path)
        self.flush_every = flush_every
        self.compression = compression
        self.n_atoms = len(atoms)
        self.frames = 0
        self.failed = False
        self.trajectory = trajectory
        self._checkpointer: Checkpointer | None = None
        self.file = h5py.File(self.path, "w")
        self.file.attrs["status"] = JobStatus.RUNNING.value
        self._write_header(atoms, provenance)
        particles = self.file.require_group("particles/all")
        self._series: dict[str, h5py.Group] = {}
        self._values: dict[str, h5py.Dataset] = {}
        self._add_series("position", particles, (self.n_atoms, 3), UNITS["position"])
        if velocities and trajectory:
            self._add_series("velocity", particles, (self.n_atoms, 3), UNITS["velocity"])
        if forces and trajectory:
            self._add_series("force", particles, (self.n_atoms, 3), UNITS["force"])
        if magmoms and trajectory:
            self._add_series("magnetic_moment", particles, (self.n_atoms,), UNITS["magnetic_moment"])
        self._add_series("box/edges", particles, (3, 3), UNITS["edges"])

    @classmethod
    def reopen(cls, path: str | Path, frames: int, *, flush_every: int = 10) -> H5MDWriter:
        """Continue a file a killed or interrupted job left: keep its first `frames` frames (those
        its checkpoint covers), drop any later ones, and append from there."""
        self = cls.__new__(cls)
        self.path = Path(path)
        self.flush_every = flush_every
        self.file = h5py.File(self.path, "r+")
        self.compression = None
        self.frames = frames
        self.failed = False
        self._checkpointer = None
        particles = self.file["particles/all"]
        self.n_atoms = particles["species"].shape[0]
        self._series, self._values = {}, {}
        observables = self.file.get("observables", {})
        # Observables on a clock of their own: written with trajectory=False.
        self.trajectory = not observables or observables[next(iter(observables))]["step"] == particles["position/step"]
        for name in ("position", "velocity", "force", "magnetic_moment", "box/edges"):
            if name in particles:
                self._remember(name, particles[name])
        for name, group in observables.items():
            self._remember(name, group)
        self._drop_partial_frame()
        self.file.attrs["status"] = JobStatus.RUNNING.value
        self.file.flush()
        return self

    @_write_failure_is_output_error
    def checkpoint(self, state: MDState) -> None:
        """Store the MD restart state (two alternating slots, see driver.checkpoint) and flush."""
        if self._checkpointer is None:
            self._checkpointer = Checkpointer(self.file)
        self._checkpointer.write(state)

    def series(self, name: str) -> np.ndarray:
        """The stored values of one observable (all frames written so far)."""
        return self.file[f"observables/{name}/value"][: self.frames]

    def steps(self) -> np.ndarray:
        """The step of every frame written so far (the observables' clock)."""
        return self._clock[0][: self.frames]

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

    def _add_series(self, name: str, parent: h5py.Group, shape: tuple[int, ...], unit: str | None,
                    clock: str = "position") -> h5py.Group:
        """A time-dependent H5MD element; its step/time are hard links to those of the series
        `clock` (the position's; the first observable's without a trajectory), its own if none yet."""
        group = parent.create_group(name)
        frames_per_chunk = max(1, min(self.flush_every, _CHUNK_BYTES // (8 * int(np.prod(shape)))))
        value = group.create_dataset(
            "value", shape=(0, *shape), maxshape=(None, *shape), dtype="f8",
            chunks=(frames_per_chunk, *shape), compression=self.compression,
        )
        if unit:
            value.attrs["unit"] = unit
        clock = self._series.get(clock)
        if clock is None:
            group.create_dataset("step", shape=(0,), maxshape=(None,), dtype="i8", chunks=(1024,))
            time = group.create_dataset("time", shape=(0,), maxshape=(None,), dtype="f8", chunks=(1024,))
            time.attrs["unit"] = UNITS["time"]
        else:
            group["step"] = clock["step"]
            group["time"] = clock["time"]
        self._remember(name, group)
        return group

    def _remember(self, name: str, group: h5py.Group) -> None:
        """Keep the datasets open for the whole job: an h5py object opened per frame and freed
        again makes HDF5 write its chunk out at every close, not at every flush."""
        self._series[name] = group
        self._values[name] = group["value"]
        if name == "position":
            self._clock = self._start_clock = (group["step"], group["time"])
        elif not self.trajectory and group.parent.name == "/observables" and self._clock is self._start_clock:
            self._clock = (group["step"], group["time"])  # the first observable's: every frame's steps

    def append(self, step: int, time_fs: float, atoms: Atoms, observables: Mapping[str, float]) -> None:
        """Add one frame; values come from the atoms' calculator cache, so nothing is recomputed.
        All values are gathered before the first write, so a failing calculator leaves no partial frame."""
        frame_values = {
            "position": atoms.get_positions(),
            "box/edges": atoms.cell[:],
            **{name: observables[name] for name in observables},
        }
        if "velocity" in self._series:
            frame_values["velocity"] = atoms.get_velocities() * units.fs
        if "force" in self._series:
            frame_values["force"] = atoms.get_forces()
        if "magnetic_moment" in self._series:  # asked of the model here, for stored frames only
            frame_values["magnetic_moment"] = atoms.get_magnetic_moments()
        self._write_frame(step, time_fs, frame_values, observables)

    @_write_failure_is_output_error
    def _write_frame(self, step: int, time_fs: float, frame_values: Mapping[str, object],
                     observables: Mapping[str, float]) -> None:
        if self.frames == 0:
            first = next(iter(observables), None)
            for name in observables:
                self._add_series(name, self.file.require_group("observables"), (), OBSERVABLE_UNITS.get(name),
                                 clock="position" if self.trajectory else first)
        index = self.frames
        clocks = [self._clock] if self.trajectory or index > 0 else [self._start_clock, self._clock]
        for clock in dict.fromkeys(clocks):
            for dataset, value in zip(clock, (step, time_fs), strict=True):
                dataset.resize((index + 1,))
                dataset[index] = value
        for name, value in frame_values.items():
            if not self.trajectory and index > 0 and name not in observables:
                continue  # without a trajectory: the particles' first frame only
            dataset = self._values[name]
            dataset.resize((index + 1, *dataset.shape[1:]))
            dataset[index] = value
        self.frames += 1
        if self.frames % self.flush_every == 0:
            self._ensure_space()
            self.file.flush()

    def _ensure_space(self) -> None:
        """Stop while the disk still has room: HDF5 that runs out of space halfway through a flush
        leaves a file it cannot open again. Stopped here, the file closes whole, with a checkpoint."""
        free = shutil.disk_usage(self.path.parent).free
        if free < MIN_FREE_BYTES:
            raise OutputError(f"{self.path}: disk nearly full ({free / 2**20:.0f} MiB free, the driver stops below "
                              f"{MIN_FREE_BYTES / 2**20:.0f} MiB) after {self.frames} frames; the file is closed "
                              "whole; free space and continue with --resume")

    @_write_failure_is_output_error
    def write_attributes(self, group_name: str, values: Mapping[str, object]) -> None:
        group = self.file.require_group(group_name)
        for key, value in values.items():
            group.attrs[key] = to_attribute(value)

    @_write_failure_is_output_error
    def write_result(self, result: TaskResult) -> None:
        """A task's result as /results/<kind>: its scalars as attributes, its arrays as datasets,
        each with the unit its field declares (driver.results)."""
        result.to_h5(self.file.require_group(f"results/{result.kind}"))

    def _drop_partial_frame(self) -> None:
        """An exception or signal inside `append` can leave step/time or some values one frame
        longer than the others (or a zero-filled frame); keep only the frames fully written."""
        for group in self._series.values():
            for name in ("step", "time", "value"):
                dataset = group[name]
                if dataset.shape[0] > self.frames:
                    dataset.resize((self.frames, *dataset.shape[1:]))

    @_write_failure_is_output_error
    def close(self, status: str, summary_entry: Mapping[str, object] | None = None) -> None:
        """Record how the job ended (and its summary.json entry, so a resumed run can report a
        job it skips), then flush and close; safe to call twice.

        After a failed write HDF5 cannot flush this file any more: every attempt, and every h5py
        object freed later, fails again (with tracebacks from destructors, and a crash at exit).
        Such a file is left as it is on disk, as of its last flush, and never touched again; the
        command line then ends the process without running those destructors."""
        if self.failed:
            ABANDONED.append(self)
            return
        if not self.file.id.valid:
            return
        self._drop_partial_frame()
        if summary_entry is not None:
            self.file.attrs["summary_entry"] = json.dumps(summary_entry)
        self.file.attrs["status"] = str(status)
        self.file.flush()
        self.file.close()
