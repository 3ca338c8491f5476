"""Restart for point-wise jobs: each finished point (a phonon displacement's forces, an EOS volume,
an elastic strain, a single-point frame, a relaxation snapshot) is stored in the job's own HDF5
file, under /points/<key>, the moment it finishes, and flushed; `driver run --resume` after a kill
(SIGKILL included: nothing is written at exit) computes only the points that are missing.

Each point records `frames` (the job's trajectory frames when it was stored: what the reopened
file keeps) and `step` (how far the job had got), so the runner reopens a killed job's file the
same way for every task (driver.resume, Task.resume_state)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import h5py
import numpy as np

GROUP = "points"


@dataclass(frozen=True)
class PointsResume:
    """What `--resume` needs to reopen a point-wise job's file: frames to keep, and the step reached."""

    step: int
    frames: int


def resume_state(file: h5py.File) -> PointsResume | None:
    """The newest stored point's `step`/`frames`, or None when the job stored none (start again)."""
    points = [group for group in file.get(GROUP, {}).values() if "order" in group.attrs]
    if not points:
        return None
    newest = max(points, key=lambda group: int(group.attrs["order"]))
    return PointsResume(int(newest.attrs["step"]), int(newest.attrs["frames"]))


class PointStore:
    """The finished points of one job, read from and written to its open H5MD file."""

    def __init__(self, writer):
        self.writer = writer

    @property
    def group(self) -> h5py.Group | dict:
        """/points as it stands (nothing is created here: every write goes through the journal)."""
        return self.writer.file.get(GROUP, {})

    def __contains__(self, key: str) -> bool:
        return key in self.group and "order" in self.group[key].attrs

    def get(self, key: str) -> dict[str, np.ndarray | float | str] | None:
        """The arrays and scalars stored for `key`, or None when that point is not finished."""
        if key not in self:
            return None
        group = self.group[key]
        values: dict[str, np.ndarray | float | str] = {}
        group.visititems(lambda name, item: values.__setitem__(name, item[()])  # "a/b": nested names too
                         if isinstance(item, h5py.Dataset) else None)
        values.update({name: value for name, value in group.attrs.items() if name not in ("order", "step", "frames")})
        return values

    def put(self, key: str, values: Mapping[str, object], step: int) -> None:
        """Store one finished point (arrays as datasets, scalars as attributes), journaled and
        fsynced. The `order` attribute is written last: a point half-written in the file has
        none and counts as missing."""
        order = int(self.writer.file.attrs.get("points_stored", 0))
        self.writer.write_attributes("/", {"points_stored": order + 1})
        attrs = {name: value for name, value in values.items() if not isinstance(value, np.ndarray)}
        attrs.update(step=int(step), frames=int(self.writer.frames), order=order)
        tree = {"datasets": {name: {"data": value} for name, value in values.items() if isinstance(value, np.ndarray)},
                "attrs": attrs}
        self.writer.put_tree(f"{GROUP}/{key}", tree)


def each_point(store: PointStore, keys: Sequence[str], compute: Callable[[int], Mapping[str, object]],
               log: logging.Logger, label: str, describe: Callable[[Mapping], str] = lambda values: "") -> list[dict]:
    """Every point's values in order, computing and storing only those not stored yet; a signal
    (SIGTERM from the scheduler, Ctrl-C) stops between two points, with all finished ones kept."""
    from driver import interrupt
    from driver.progress import Progress

    stored = sum(key in store for key in keys)
    if stored:
        log.info("%s: %d of %d points already stored (--resume); computing the other %d",
                 label, stored, len(keys), len(keys) - stored)
    progress = Progress(log, label, len(keys), unit="point")
    results = []
    for number, key in enumerate(keys):
        values = store.get(key)
        if values is None:
            interrupt.raise_if_requested()
            values = dict(compute(number))
            store.put(key, values, step=number + 1)
        results.append(dict(values))
        progress.update(number + 1, describe(values))
    progress.finish()
    return results
