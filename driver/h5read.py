"""Opening a job file for reading: one place that turns a damaged or foreign HDF5 file into one
line naming it, whether h5py fails when opening it or later, reading a damaged chunk or object
header ("wrong B-tree signature") in the middle of an analysis."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from driver.errors import InputError, first_line


@contextmanager
def reading(path: str | Path, hint: str = "") -> Iterator:
    """`h5py.File(path, "r")`; OSError inside the block (h5py's error for damaged data) becomes
    InputError too. `hint` ends the line (e.g. what the file was expected to be)."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.with_name(path.name + ".journal").exists():  # driver.journal.SUFFIX (not imported: keeps this light)
        hint += f"; a killed job's file: `driver run --resume` rebuilds it from {path.name}.journal"
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({first_line(exc)}){hint}") from None
    try:
        with handle:
            yield handle
    except OSError as exc:
        raise InputError(f"{path}: damaged HDF5 file, a read failed ({first_line(exc)}){hint}") from None
