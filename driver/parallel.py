"""MPI for `driver run`: which rank runs which job, and how ranks agree or stop together.

Everything MPI-specific lives here. Without mpi4py, or outside mpirun (a singleton MPI
process), the world has one rank and every collective is a no-op, so serial runs need nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from driver.errors import InputError

T = TypeVar("T")


class World:
    """The ranks of this run: COMM_WORLD when mpi4py is importable, else a single rank."""

    def __init__(self, comm=None):
        if comm is None:
            try:
                from mpi4py import MPI
            except ImportError:  # no MPI installed: a world of one
                MPI = None
                _refuse_launch_without_mpi4py()
            comm = MPI.COMM_WORLD if MPI is not None else None
        self.comm = comm
        self.size = comm.Get_size() if comm is not None else 1
        self.rank = comm.Get_rank() if comm is not None else 0
        self.local_rank = self._local_rank()

    def _local_rank(self) -> int:
        """Rank among the processes on this node (shared memory), for picking a GPU."""
        if self.comm is None or self.size == 1:
            return 0
        from mpi4py import MPI

        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        try:
            return node.Get_rank()
        finally:
            node.Free()

    @property
    def parallel(self) -> bool:
        return self.size > 1

    @property
    def root(self) -> bool:
        return self.rank == 0

    def share(self, items: Sequence[T]) -> list[T]:
        """This rank's items: round-robin, deterministic. A recipe's jobs cost about the same
        (same structure, same steps), so counts within one of each other finish together."""
        return list(items[self.rank::self.size])

    def barrier(self) -> None:
        if self.parallel:
            self.comm.Barrier()

    def allgather(self, value: T) -> list[T]:
        return self.comm.allgather(value) if self.parallel else [value]

    def on_root(self, action: Callable[[], None]) -> None:
        """Run `action` on rank 0; an InputError it raises is raised on every rank, same message."""
        message = None
        if self.root:
            try:
                action()
            except InputError as exc:
                message = str(exc)
                if not self.parallel:
                    raise
        if self.parallel:
            message = self.comm.bcast(message, root=0)
        if message is not None:
            raise InputError(message)

    def abort(self, message: str) -> None:
        """Print this rank's error on stderr and stop every rank (no rank left waiting)."""
        print(f"error (rank {self.rank} of {self.size}): {message}", file=sys.stderr, flush=True)
        if self.parallel:
            self.comm.Abort(1)
        sys.exit(1)

    @contextlib.contextmanager
    def abort_on_error(self, what: str, passthrough: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
        """In a parallel run, an exception escaping the block ends the whole run at once; the
        other ranks would otherwise wait for this one forever. `passthrough`: exceptions every
        rank raises alike (same inputs), left to the caller. Serial runs: nothing changes."""
        if not self.parallel:
            yield
            return
        try:
            yield
        except passthrough:
            raise
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            self.abort(f"{what}: {type(exc).__name__}: {exc}")

    def log_to_rank_file(self, out_dir: Path) -> None:
        """Parallel runs: each rank logs to OUT/logs/rank-N.log; only rank 0 also logs on stderr
        (other ranks keep warnings and errors there)."""
        if not self.parallel:
            return
        root_logger = logging.getLogger()
        if not self.root:
            for handler in root_logger.handlers:
                if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                    handler.setLevel(max(handler.level, logging.WARNING))
        logs = out_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(logs / f"rank-{self.rank}.log", mode="w")
        handler.setFormatter(logging.Formatter(f"%(asctime)s [rank {self.rank}] %(message)s", "%H:%M:%S"))
        root_logger.addHandler(handler)


def _refuse_launch_without_mpi4py() -> None:
    """Started by mpirun with several ranks but unable to talk MPI: every rank would run every
    job into the same files. Launchers say so in their environment (only used for this check)."""
    for variable in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE"):
        value = os.environ.get(variable, "")
        if value.isdigit() and int(value) > 1:
            raise InputError(f"started by an MPI launcher with {os.environ[variable]} ranks ({variable}) but "
                             "mpi4py is not installed; pip install 'umlip-driver[mpi]' or run without mpirun")
