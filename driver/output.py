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
Every change is recorded first in the file's journal (driver.journal), from which `--resume`
rebuilds a file a kill left damaged (`rebuild`); the journal goes when the job has finished.
With `trajectory=False` (output.trajectory: false) /particles/all holds the first frame only (the
start: positions and box) on a clock of its own, and the observables share theirs; a resumed MD
job reads its restart state from /checkpoint, never from frames.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import h5py
import numpy as np
from ase import Atoms, units

from driver import __version__, faults, journal
from driver.checkpoint import Checkpointer, MDState
from driver.errors import OutputError, first_line
from driver.journal import Journal, Record, base_path, fsync_path, journal_path
from driver.results import FINISHED, JobStatus, TaskResult, to_attribute

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
            raise OutputError(f"{self.path}: writing failed after {self.frames} frames ({_os_reason(exc)}; "
                              f"{journal.free_space(self.path)}); its journal keeps every frame and the last "
                              "checkpoint: free space and continue with --resume") from None

    return wrapper


def _os_reason(exc: BaseException) -> str:
    """The operating system's words ('No space left on device') from inside HDF5's message."""
    found = re.search(r"error message = '([^']+)'", str(exc))
    return found.group(1) if found else first_line(exc)


class H5MDWriter:
    """Stream frames of one job into an extendable, chunked H5MD file.

    Each public change is one journal record (`_record`), then the same change to the HDF5 file
    (`_apply`); `rebuild` replays the records into a new file. So the file's layout is decided in
    one place for both, and a rebuilt file equals the one the records describe."""

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
        self._blank(Path(path))
        args = {"numbers": atoms.numbers.astype(np.int32), "pbc": np.array(atoms.pbc), "masses": atoms.get_masses(),
                "provenance": {key: to_attribute(value) for key, value in provenance.items()},
                "flush_every": flush_every, "compression": compression, "velocities": velocities,
                "forces": forces, "trajectory": trajectory, "magmoms": magmoms}
        self.journal = Journal(self.path, first=("create", args))
        base_path(self.path).unlink(missing_ok=True)
        self._create(**args)

    def _blank(self, path: Path) -> None:
        self.path = path
        self.frames = 0
        self.failed = False
        self.journal: Journal | None = None
        self._checkpointer: Checkpointer | None = None
        self._series: dict[str, h5py.Group] = {}
        self._values: dict[str, h5py.Dataset] = {}

    @classmethod
    def reopen(cls, path: str | Path, frames: int, *, flush_every: int = 10) -> H5MDWriter:
        """Continue a file a killed or interrupted job left: keep its first `frames` frames (those
        its checkpoint covers), drop any later ones, and append from there."""
        self = cls._continue(Path(path), flush_every)
        self._record("truncate", {"frames": frames})
        self._truncate(frames)
        return self

    @classmethod
    def amend(cls, path: str | Path, attributes: Mapping[str, Mapping[str, object]]) -> None:
        """Change attributes of a closed job file (a study's verdict on a job it stopped), with
        the journal as every change."""
        self = cls._continue(Path(path), 10)
        for group_name, values in attributes.items():
            self.write_attributes(group_name, values)
        self.file.flush()
        self.file.close()
        self.journal.close()

    @classmethod
    def _continue(cls, path: Path, flush_every: int) -> H5MDWriter:
        """The writer of an existing job file, its journal continued. A file without one (its job
        had finished, or an older driver wrote it) is first copied whole as the journal's base."""
        self = cls.__new__(cls)
        self._blank(path)
        if not journal_path(path).exists():
            base, tmp = base_path(path), path.with_name(path.name + ".tmp")
            shutil.copyfile(path, tmp)
            fsync_path(tmp)
            os.replace(tmp, base)
            self.journal = Journal(path, first=("base", {}))
        else:
            self.journal = Journal(path)
        self._open_existing(flush_every)
        return self

    def _open_existing(self, flush_every: int) -> None:
        self.flush_every = flush_every
        self.compression = None
        self.file = h5py.File(self.path, "r+")
        particles = self.file["particles/all"]
        self.n_atoms = particles["species"].shape[0]
        observables = self.file.get("observables", {})
        # Observables on a clock of their own: written with trajectory=False.
        self.trajectory = not observables or observables[next(iter(observables))]["step"] == particles["position/step"]
        for name in ("position", "velocity", "force", "magnetic_moment", "box/edges"):
            if name in particles:
                self._remember(name, particles[name])
        for name, group in observables.items():
            self._remember(name, group)
        self.frames = self._clock[0].shape[0]

    # -- the journal ---------------------------------------------------------------------------

    def _record(self, op: str, args: dict, sync: bool = False) -> None:
        """Write-ahead: the change is in the journal before the HDF5 file sees it."""
        if self.journal is None:  # replaying the journal itself
            return
        if self.failed:
            raise OutputError(f"{self.path}: not written: an earlier write to it failed")
        try:
            self.journal.write(op, args, sync=sync)
        except OutputError:
            self.failed = True
            raise

    @classmethod
    def rebuild(cls, path: str | Path) -> bool:
        """`--resume` after a kill: the job file anew from its journal's whole records (written to
        a temporary name, then renamed over the old one, which a kill may have left unreadable).
        False when the journal holds no first record (killed before the job began)."""
        path = Path(path)
        count, _ = journal.extent(journal_path(path))
        recorded = journal.records(journal_path(path))
        first = next(recorded, None)
        if first is None or first.op not in ("create", "base"):
            return False
        tmp = path.with_name(path.name + ".rebuild")
        self = cls.__new__(cls)
        self._blank(tmp)
        try:
            self._apply(first)
            for number, record in enumerate(recorded, start=1):
                if number == count // 2:
                    faults.at("recover")
                self._apply(record)
            self.file.flush()
            self.file.close()
            fsync_path(tmp)
        except (OSError, RuntimeError) as exc:
            raise OutputError(f"{path}: cannot be rebuilt from its journal ({_os_reason(exc)}; "
                              f"{journal.free_space(path)})") from None
        os.replace(tmp, path)
        fsync_path(path.parent)
        return True

    def _apply(self, record: Record) -> None:
        args = record.args
        if record.op == "create":
            self._create(**args)
        elif record.op == "base":
            shutil.copyfile(base_path(self.path.with_name(self.path.name.removesuffix(".rebuild"))), self.path)
            self._open_existing(10)
        elif record.op == "frame":
            self._write_frame(args["step"], args["time_fs"], args["values"], args["observables"])
        elif record.op == "attrs":
            self._write_attributes(args["group"], args["values"])
        elif record.op == "tree":
            self._put_tree(args["path"], args["tree"], args["in_place"])
        elif record.op == "truncate":
            self._truncate(args["frames"])
        elif record.op == "close":
            self._close_attributes(args["status"], args["summary_entry"])
        else:
            raise ValueError(f"journal: unknown operation {record.op!r}")

    # -- creating the file ---------------------------------------------------------------------

    @_write_failure_is_output_error
    def _create(self, numbers: np.ndarray, pbc: np.ndarray, masses: np.ndarray, provenance: Mapping[str, object],
                flush_every: int, compression: str | None, velocities: bool, forces: bool, trajectory: bool,
                magmoms: bool) -> None:
        self.flush_every = flush_every
        self.compression = compression
        self.n_atoms = len(numbers)
        self.trajectory = trajectory
        self.file = h5py.File(self.path, "w")
        self.file.attrs["status"] = JobStatus.RUNNING.value
        self._write_header(Atoms(numbers=numbers, pbc=pbc, masses=masses), provenance)
        particles = self.file.require_group("particles/all")
        self._add_series("position", particles, (self.n_atoms, 3), UNITS["position"])
        if velocities and trajectory:
            self._add_series("velocity", particles, (self.n_atoms, 3), UNITS["velocity"])
        if forces and trajectory:
            self._add_series("force", particles, (self.n_atoms, 3), UNITS["force"])
        if magmoms and trajectory:
            self._add_series("magnetic_moment", particles, (self.n_atoms,), UNITS["magnetic_moment"])
        self._add_series("box/edges", particles, (3, 3), UNITS["edges"])
        self.file.flush()

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
        self._write_attributes("parameters", provenance)

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

    # -- reading back what this job wrote ------------------------------------------------------

    def series(self, name: str) -> np.ndarray:
        """The stored values of one observable (all frames written so far)."""
        return self.file[f"observables/{name}/value"][: self.frames]

    def steps(self) -> np.ndarray:
        """The step of every frame written so far (the observables' clock)."""
        return self._clock[0][: self.frames]

    # -- frames --------------------------------------------------------------------------------

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
        frame_values = {name: np.asarray(value, dtype=np.float64) for name, value in frame_values.items()}
        self._record("frame", {"step": int(step), "time_fs": float(time_fs), "values": frame_values,
                               "observables": list(observables)})
        self._write_frame(int(step), float(time_fs), frame_values, list(observables))

    @_write_failure_is_output_error
    def _write_frame(self, step: int, time_fs: float, frame_values: Mapping[str, object],
                     observables: list[str]) -> None:
        if self.frames == 0:
            first = next(iter(observables), None)
            for name in observables:
                if name not in self._series:
                    self._add_series(name, self.file.require_group("observables"), (),
                                     OBSERVABLE_UNITS.get(name), clock="position" if self.trajectory else first)
        index = self.frames
        clocks = [self._clock] if self.trajectory or index > 0 else [self._start_clock, self._clock]
        for clock in dict.fromkeys(clocks):
            for dataset, value in zip(clock, (step, time_fs), strict=True):
                dataset.resize((index + 1,))
                dataset[index] = value
        faults.at("h5.frame")
        for name, value in frame_values.items():
            if not self.trajectory and index > 0 and name not in observables:
                continue  # without a trajectory: the particles' first frame only
            dataset = self._values[name]
            dataset.resize((index + 1, *dataset.shape[1:]))
            dataset[index] = value
        self.frames += 1
        if self.frames % self.flush_every == 0:
            self._ensure_space()
            faults.at("h5.flush")
            self.file.flush()

    def _ensure_space(self) -> None:
        """Stop while the disk still has room: HDF5 that runs out of space halfway through a flush
        leaves a file it cannot open again. Stopped here, the file closes whole, with a checkpoint."""
        free = shutil.disk_usage(self.path.parent).free
        if free < MIN_FREE_BYTES:
            raise OutputError(f"{self.path}: disk nearly full ({free / 2**20:.0f} MiB free, the driver stops below "
                              f"{MIN_FREE_BYTES / 2**20:.0f} MiB) after {self.frames} frames; the file is closed "
                              "whole; free space and continue with --resume")

    def _truncate(self, frames: int) -> None:
        """Keep the first `frames` frames (a checkpoint's), marked running again."""
        self.frames = frames
        self._drop_partial_frame()
        self.file.attrs["status"] = JobStatus.RUNNING.value
        self.file.flush()

    def _drop_partial_frame(self) -> None:
        """An exception or signal inside `append` can leave step/time or some values one frame
        longer than the others (or a zero-filled frame); keep only the frames fully written."""
        for group in self._series.values():
            for name in ("step", "time", "value"):
                dataset = group[name]
                if dataset.shape[0] > self.frames:
                    dataset.resize((self.frames, *dataset.shape[1:]))

    # -- attributes, checkpoints, points, results ----------------------------------------------

    def write_attributes(self, group_name: str, values: Mapping[str, object]) -> None:
        """Attributes of a group ("/" for the file's own)."""
        values = {key: to_attribute(value) for key, value in values.items()}
        self._record("attrs", {"group": group_name, "values": values})
        self._write_attributes(group_name, values)

    @_write_failure_is_output_error
    def _write_attributes(self, group_name: str, values: Mapping[str, object]) -> None:
        group = self.file if group_name == "/" else self.file.require_group(group_name)
        for key, value in values.items():
            group.attrs[key] = value

    def checkpoint(self, state: MDState) -> None:
        """Store the MD restart state (two alternating slots, see driver.checkpoint), fsynced."""
        if self._checkpointer is None:
            self._checkpointer = Checkpointer(self)
        self._checkpointer.write(state)

    def put_tree(self, path: str, tree: dict, in_place: bool = False) -> None:
        """Write group `path` whole: `tree` holds its attributes ("attrs"), subgroups' attributes
        ("groups") and datasets ("datasets": data and attrs), its own attributes written last
        (a seal: a checkpoint's checksum, a point's order). `in_place` overwrites datasets of
        the same shape where they are (a checkpoint slot: the file does not grow). The journal
        is fsynced: what this stores survives a node failure."""
        self._record("tree", {"path": path, "tree": tree, "in_place": in_place}, sync=True)
        self._put_tree(path, tree, in_place)

    @_write_failure_is_output_error
    def _put_tree(self, path: str, tree: dict, in_place: bool) -> None:
        if not in_place and path in self.file:
            del self.file[path]
        root = self.file.require_group(path)
        for name, attrs in tree.get("groups", {}).items():
            root.require_group(name).attrs.update(attrs)
        datasets = tree.get("datasets", {})
        for number, (name, item) in enumerate(datasets.items()):
            if number == len(datasets) // 2:
                faults.at("h5.tree")
            data = item["data"]
            strings = isinstance(data, np.ndarray) and data.dtype.kind == "O"
            existing = root.get(name)
            if (in_place and isinstance(existing, h5py.Dataset) and not strings
                    and existing.shape == np.shape(data) and existing.dtype == np.asarray(data).dtype):
                existing[...] = data
                dataset = existing
            else:
                if name in root:
                    del root[name]
                dataset = root.create_dataset(name, data=data, dtype=h5py.string_dtype() if strings else None)
            dataset.attrs.update(item.get("attrs", {}))
        for key, value in tree.get("attrs", {}).items():
            root.attrs[key] = value
        self.file.flush()

    def write_result(self, result: TaskResult) -> None:
        """A task's result as /results/<kind>: its scalars as attributes, its arrays as datasets,
        each with the unit its field declares (driver.results)."""
        self.put_tree(f"results/{result.kind}", tree_of(result.to_h5))

    # -- the end -------------------------------------------------------------------------------

    def close(self, status: str, summary_entry: Mapping[str, object] | None = None) -> None:
        """Record how the job ended (and its summary.json entry, so a resumed run can report a
        job it skips), then flush and close; safe to call twice. A finished job's file, closed
        whole and fsynced, no longer needs its journal.

        After a failed write HDF5 cannot flush this file any more: every attempt, and every h5py
        object freed later, fails again (with tracebacks from destructors, and a crash at exit).
        Such a file is left as it is on disk, as of its last flush, and never touched again; the
        command line then ends the process without running those destructors."""
        if self.failed:
            ABANDONED.append(self)
            return
        if not self.file.id.valid:
            return
        entry = json.dumps(summary_entry) if summary_entry is not None else None
        self._record("close", {"status": str(status), "summary_entry": entry}, sync=True)
        self._close_attributes(str(status), entry)
        self._close_file()
        if self.journal is not None:
            self.journal.close()
            if status in FINISHED:
                fsync_path(self.path)
                journal.remove(self.path)

    @_write_failure_is_output_error
    def _close_attributes(self, status: str, summary_entry: str | None) -> None:
        self._drop_partial_frame()
        if summary_entry is not None:
            self.file.attrs["summary_entry"] = summary_entry
        faults.at("h5.close")
        self.file.attrs["status"] = status

    @_write_failure_is_output_error
    def _close_file(self) -> None:
        self.file.flush()
        self.file.close()


def tree_of(fill: Callable[[h5py.Group], None]) -> dict:
    """What `fill` writes into an HDF5 group, as put_tree's `tree` (read back from memory)."""
    with h5py.File(io.BytesIO(), "w") as memory:
        group = memory.create_group("tree")
        fill(group)
        tree: dict = {"attrs": dict(group.attrs), "groups": {}, "datasets": {}}

        def visit(name: str, item: h5py.Group | h5py.Dataset) -> None:
            if isinstance(item, h5py.Dataset):
                tree["datasets"][name] = {"data": item[()], "attrs": dict(item.attrs)}
            else:
                tree["groups"][name] = dict(item.attrs)

        group.visititems(visit)
    return tree


def recover(path: Path) -> None:
    """Before `--resume` reads a job file: rebuilt from its journal when one is there; a job
    killed before its first record starts again (both files removed); a finished job's journal
    that a kill left behind is removed."""
    if not journal_path(path).exists():
        return
    if not H5MDWriter.rebuild(path):
        path.unlink(missing_ok=True)
        journal.remove(path)
        return
    with h5py.File(path, "r") as handle:
        finished = str(handle.attrs.get("status", "")) in FINISHED
    if finished:
        journal.remove(path)
