"""How a job ended, in one place: the status every module writes, reads and groups by.

A job's status is written to its HDF5 file (the root attribute `status`), to its summary.json
entry and to the run report; `--resume`, `driver compare` and the exit code read it back. The
groups below say which statuses count for what, so no module keeps a tuple of its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from enum import StrEnum
from typing import ClassVar, Self, TypeVar

import numpy as np

from driver.errors import InputError

SUMMARY_NAME = "summary.json"  # the run's summary, written last and atomically by the runner


class JobStatus(StrEnum):
    """A StrEnum: each member is its text, so JSON, HDF5 attributes and comparisons with the
    strings found in older files need no conversion."""

    RUNNING = "running"  # the file's status while the job runs (a killed job leaves this)
    COMPLETED = "completed"
    SUSPECT = "suspect"  # finished, but the task names reasons to distrust the result (NEB)
    NOT_CONVERGED = "not converged"  # finished at its step limit: the last result is kept (exit 1)
    FAILED = "failed"  # the simulation failed (exploded, non-finite forces): exit 1
    INTERRUPTED = "interrupted"  # a signal or a full disk stopped it: --resume continues it
    NOT_RUN = "not run"  # the run stopped before this job started
    UNKNOWN = "unknown (another rank; see the status in its file)"  # interrupted under MPI

    @classmethod
    def of_result(cls, result: Mapping[str, object]) -> JobStatus:
        """A finished task's status from what it returned: `converged` false -> not converged;
        `suspect` true -> suspect; else completed."""
        if not result.get("converged", True):
            return cls.NOT_CONVERGED
        return cls.SUSPECT if result.get("suspect") else cls.COMPLETED


SUCCEEDED = frozenset({JobStatus.COMPLETED, JobStatus.SUSPECT})  # exit 0
WITH_RESULTS = SUCCEEDED | {JobStatus.NOT_CONVERGED}  # reported and compared from their results
FINISHED = WITH_RESULTS | {JobStatus.FAILED}  # --resume skips these


# A task's result: typed fields, each declared once with its unit and where it goes.

_ROLE, _UNIT, _OPTIONAL = "result_role", "unit", "omit_if_none"


class _Absent:
    """The value of an optional field that a job does not have: its key is left out of the summary
    entry and the file (None is a value, written as null / "none")."""

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()


def present(value: object) -> bool:
    """Whether an optional field holds a value (neither absent nor None)."""
    return value is not ABSENT and value is not None


def scalar(unit: str | None = None, *, default: object = MISSING, optional: bool = False):
    """A number, flag, string or short list: the job's summary entry and an attribute of
    /results/<kind>. `optional`: a key that only some jobs have (an MD schedule's targets, errors
    against labels), ABSENT by default and then left out of both."""
    if optional and default is MISSING:
        default = ABSENT
    return field(default=default, metadata={_ROLE: "scalar", _UNIT: unit, _OPTIONAL: optional})


def array(unit: str | None):
    """A dataset of /results/<kind> with its `unit` attribute (None: a count or an index). None
    in a result read back from a summary entry, which holds scalars only."""
    return field(default=None, metadata={_ROLE: "array", _UNIT: unit, _OPTIONAL: True})


def file_only(*, default: object = MISSING):
    """An attribute of /results/<kind> that the summary entry leaves out (bulky or internal)."""
    return field(default=default, metadata={_ROLE: "file_only", _UNIT: None, _OPTIONAL: False})


@dataclass
class TaskResult:
    """What one job of a task kind computed (the subclass's `kind`); the one way a result becomes
    its summary entry and its /results/<kind> group, and is read back from that group (`from_h5`:
    driver compare, --resume of a finished job). The subclass's fields say which is which."""

    kind: ClassVar[str]

    @classmethod
    def _fields(cls, role: str) -> list:
        return [f for f in fields(cls) if f.metadata.get(_ROLE) == role]

    @classmethod
    def units(cls) -> dict[str, str]:
        """Field -> unit, for every field that has one (the H5MD writer stores them beside the data)."""
        return {f.name: f.metadata[_UNIT] for f in fields(cls) if f.metadata.get(_UNIT)}

    def _present(self, role: str) -> dict[str, object]:
        """The fields of `role` that hold something: an absent optional scalar, or an array
        that is None (a result read back from a summary), is left out."""
        values = {f.name: getattr(self, f.name) for f in self._fields(role)}
        return {name: value for name, value in values.items()
                if value is not ABSENT and not (role == "array" and value is None)}

    def scalars(self) -> dict[str, object]:
        """The summary entry's task part (JSON-ready)."""
        return {name: _plain(value) for name, value in self._present("scalar").items()}

    def attributes(self) -> dict[str, object]:
        """/results/<kind>'s attributes: the scalars and the file-only fields."""
        return self.scalars() | {name: _plain(value) for name, value in self._present("file_only").items()}

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: np.asarray(value) for name, value in self._present("array").items()}

    def to_h5(self, group) -> None:
        """Into a job file's /results/<kind> group (h5py): attributes, and datasets with units."""
        for key, value in self.attributes().items():
            group.attrs[key] = to_attribute(value)
        units = self.units()
        for key, value in self.arrays().items():
            if key in group:
                del group[key]
            dataset = group.create_dataset(key, data=value)
            if key in units:
                dataset.attrs["unit"] = units[key]

    def status(self) -> JobStatus:
        return JobStatus.of_result(self.scalars())

    @classmethod
    def from_summary(cls, entry: Mapping[str, object]) -> Self:
        """The scalars of a summary entry (summary.json, or a job's stored entry), arrays None:
        what the report and the raw-vs-corrected relations read."""
        wanted = cls._fields("scalar") + cls._fields("file_only")
        return cls(**{f.name: entry[f.name] for f in wanted if f.name in entry})

    @classmethod
    def from_h5(cls, group) -> Self:
        """The result stored in a job file's /results/<kind> group (h5py), as written."""
        values: dict[str, object] = {}
        for f in cls._fields("scalar") + cls._fields("file_only"):
            if f.name in group.attrs:
                values[f.name] = _from_attribute(group.attrs[f.name])
        for f in cls._fields("array"):
            if f.name in group:
                values[f.name] = group[f.name][()]
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
                   and f.name not in values]
        if missing:
            raise InputError(f"{group.file.filename}: {group.name} lacks {', '.join(missing)} (written by another "
                             "version of the driver?)")
        return cls(**values)


R = TypeVar("R", bound=TaskResult)


def read_result(cls: type[R], path) -> R:
    """The result a job file holds under /results/<cls.kind> (as `driver compare` reads it)."""
    from driver.h5read import reading

    with reading(path) as handle:
        return cls.from_h5(handle[f"results/{cls.kind}"])


def _plain(value: object) -> object:
    """numpy scalars and arrays as Python numbers and lists (JSON and HDF5 attributes take both)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def to_attribute(value: object) -> object:
    """How the H5MD writer stores a scalar as an HDF5 attribute: None as "none", lists and
    mappings as JSON text (HDF5 has no ragged or nested attributes). Reading decodes JSON text
    back, so a field holds a list as a list, never as JSON text of its own."""
    if value is None:
        return "none"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    return value


def _from_attribute(value: object) -> object:
    """The inverse of `to_attribute` for what results store."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        if value == "none":
            return None
        if value[:1] in "[{":
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                return value
        return value
    if isinstance(value, np.generic):
        return value.item()
    return value
