"""A job file's write-ahead journal: `<job>.h5.journal` beside `<job>.h5`.

HDF5 files are not crash-consistent: a process killed inside an HDF5 call (a flush, a close) can
leave a file that no longer opens, and with it every frame the job had written. So every change
the writer makes to a job file is first appended here as one self-checking record (length and
CRC-32), and only then made to the HDF5 file. A kill at any instant leaves at worst a partial
last record, which reading drops; `driver run --resume` rebuilds the HDF5 file from the whole
records (driver.output.rebuild) and continues from the state they hold. Records are written with
one `write` each (the page cache keeps them through a SIGKILL) and the journal is fsynced with
each checkpoint, finished point and result (so they also survive a node failure). The journal is
removed once its job has finished and its file is closed whole.

A record is JSON (the operation and its plain arguments) followed by the raw bytes of its arrays;
nothing is unpickled, so reading a journal runs no code from it.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from driver import faults
from driver.errors import OutputError, first_line

SUFFIX = ".journal"
BASE_SUFFIX = ".journal-base"  # a copy of a job file that was continued without a journal
_MAGIC = b"DRJ1"
_HEAD = struct.Struct("<4sQI")  # magic, payload length, CRC-32 of the payload


def journal_path(h5: Path) -> Path:
    return h5.with_name(h5.name + SUFFIX)


def base_path(h5: Path) -> Path:
    return h5.with_name(h5.name + BASE_SUFFIX)


@dataclass
class Record:
    op: str
    args: dict


def _encode(value: object, blobs: list[bytes]) -> object:
    """JSON for plain values; arrays (and numpy scalars, to keep their dtype) as raw bytes."""
    if isinstance(value, np.generic):
        value = np.asarray(value)
        encoded = _encode(value, blobs)
        return {"scalar": encoded}
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OUS":
            strings = [v.decode() if isinstance(v, bytes) else str(v) for v in value.ravel().tolist()]
            return {"strings": strings, "shape": list(value.shape)}
        blobs.append(np.ascontiguousarray(value).tobytes())
        return {"array": len(blobs) - 1, "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, dict):
        return {"dict": {str(k): _encode(v, blobs) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"list": [_encode(v, blobs) for v in value]}
    if isinstance(value, bytes):
        return {"bytes": value.decode("latin-1")}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"journal: cannot record a {type(value).__name__}")


def _decode(value: object, blobs: list[memoryview]) -> object:
    if not isinstance(value, dict):
        return value
    if "scalar" in value:
        return _decode(value["scalar"], blobs)[()]
    if "array" in value:
        return np.frombuffer(blobs[value["array"]], dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()
    if "strings" in value:
        return np.array(value["strings"], dtype=object).reshape(value["shape"])
    if "dict" in value:
        return {k: _decode(v, blobs) for k, v in value["dict"].items()}
    if "list" in value:
        return [_decode(v, blobs) for v in value["list"]]
    if "bytes" in value:
        return value["bytes"].encode("latin-1")
    raise ValueError(f"journal: unknown value {sorted(value)}")


def encode_record(op: str, args: dict) -> bytes:
    blobs: list[bytes] = []
    encoded = _encode(args, blobs)
    header = json.dumps({"op": op, "args": encoded, "sizes": [len(b) for b in blobs]}).encode()
    payload = b"".join([struct.pack("<I", len(header)), header, *blobs])
    return _HEAD.pack(_MAGIC, len(payload), zlib.crc32(payload)) + payload


def _decode_payload(payload: memoryview) -> Record:
    (size,) = struct.unpack_from("<I", payload)
    header = json.loads(bytes(payload[4:4 + size]))
    blobs, offset = [], 4 + size
    for length in header["sizes"]:
        blobs.append(payload[offset:offset + length])
        offset += length
    return Record(header["op"], _decode(header["args"], blobs))


def _scan(path: Path) -> Iterator[tuple[int, bytes]]:
    """(end offset, payload) of each whole record, read one at a time; a partial or damaged
    record (the one a kill interrupted) ends the journal."""
    with open(path, "rb") as handle:
        offset = 0
        while True:
            head = handle.read(_HEAD.size)
            if len(head) < _HEAD.size:
                return
            magic, length, crc = _HEAD.unpack(head)
            if magic != _MAGIC:
                return
            payload = handle.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return
            offset += _HEAD.size + length
            yield offset, payload


def records(path: Path) -> Iterator[Record]:
    """The journal's whole records, in order, decoded one at a time."""
    for _, payload in _scan(path):
        try:
            yield _decode_payload(memoryview(payload))
        except (ValueError, KeyError, TypeError, struct.error):
            return


def extent(path: Path) -> tuple[int, int]:
    """How many whole records the journal holds, and the bytes they fill."""
    count, length = 0, 0
    for end, _ in _scan(path):
        count, length = count + 1, end
    return count, length


class Journal:
    """Appends records to one job file's journal."""

    def __init__(self, h5: Path, first: tuple[str, dict] | None = None):
        """A new journal whose first record is `first` (written under a temporary name, fsynced,
        then renamed: a journal on disk always begins with a whole record), or (None) the
        existing one continued after its last whole record (a partial one a kill left is cut)."""
        self.path = journal_path(h5)
        self.failed = False
        if first is not None:
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _write_all(fd, encode_record(*first))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            fsync_path(self.path.parent)
        _, whole = extent(self.path)
        self._fd = os.open(self.path, os.O_WRONLY)
        os.ftruncate(self._fd, whole)
        os.lseek(self._fd, whole, os.SEEK_SET)

    def write(self, op: str, args: dict, sync: bool = False) -> None:
        """One record, with one `write` (a kill leaves it whole or partial, never interleaved)."""
        if self.failed:
            raise OutputError(f"{self.path}: an earlier write failed; nothing more is recorded")
        data = encode_record(op, args)
        start = os.lseek(self._fd, 0, os.SEEK_CUR)
        try:
            half = len(data) // 2
            if os.environ.get(faults.ENV):  # the crash tests: a kill between the two halves
                _write_all(self._fd, data[:half])
                faults.at("journal.record")
                _write_all(self._fd, data[half:])
            else:
                _write_all(self._fd, data)
            if sync:
                os.fsync(self._fd)
        except OSError as exc:
            self.failed = True
            try:  # leave the journal ending with a whole record
                os.ftruncate(self._fd, start)
            except OSError:
                pass
            raise OutputError(f"{self.path}: writing failed ({_reason(exc)}; {free_space(self.path)}); "
                              "every earlier record is kept: free space and continue with --resume") from None

    def sync(self) -> None:
        if not self.failed:
            try:
                os.fsync(self._fd)
            except OSError:
                pass

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _reason(exc: OSError) -> str:
    return exc.strerror or first_line(exc)


def free_space(path: Path) -> str:
    """'N MiB free on <folder>', for the messages of a failed write."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return f"free space on {path.parent} unknown"
    return f"{free / 2**20:.0f} MiB free on {path.parent}"


def fsync_path(path: Path) -> None:
    """fsync a file (or a folder: a rename in it) by name."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(h5: Path) -> None:
    """The finished job's journal (and base copy), once its file is closed whole and on disk."""
    faults.at("journal.remove")
    journal_path(h5).unlink(missing_ok=True)
    base_path(h5).unlink(missing_ok=True)
