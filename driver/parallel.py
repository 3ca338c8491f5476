"""MPI for `driver run`: which rank runs which job, and how ranks agree or stop together.

Everything MPI-specific lives here. Without mpi4py, or outside mpirun (a singleton MPI
process), the world has one rank and every collective is a no-op, so serial runs need nothing.
Rank and size come from MPI itself; a launcher's environment (PMI_SIZE, OMPI_COMM_WORLD_SIZE) is
read only to refuse a launch that MPI cannot see, where every rank would run every job.

Several ranks on one node share its cores: torch would give each rank a thread per core, and
ranks x cores threads on the cores slow every rank down. Unless the user chose (OMP_NUM_THREADS),
each rank then gets its share of the cores (`threads_per_rank`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from driver.errors import InputError

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


class World:
    """The ranks of this run: COMM_WORLD when mpi4py is importable, else a single rank."""

    def __init__(self, comm=None):
        own_world = comm is None  # a communicator passed in (tests): leave the process's threads alone
        if comm is None:
            try:
                from mpi4py import MPI
            except ImportError:  # no MPI installed: a world of one
                MPI = None
            comm = MPI.COMM_WORLD if MPI is not None else None
        self.comm = comm
        self.size = comm.Get_size() if comm is not None else 1
        self.rank = comm.Get_rank() if comm is not None else 0
        if own_world:
            if self.size == 1:
                _refuse_launch_mpi_cannot_see(have_mpi4py=comm is not None)
            else:
                _refuse_mixed_command_lines(self.comm.allgather(sys.argv[1:]))
        self.local_rank, self.local_size = self._node_ranks()
        if own_world and self.parallel:
            share_cores(self.local_rank, self.local_size)

    def _node_ranks(self) -> tuple[int, int]:
        """(rank, number of ranks) among the processes on this node (shared memory): the local
        rank picks a GPU, the local size divides the cores."""
        if self.comm is None or self.size == 1:
            return 0, 1
        from mpi4py import MPI

        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        try:
            return node.Get_rank(), node.Get_size()
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

    def broadcast(self, value: T) -> T:
        """Rank 0's value, on every rank."""
        return self.comm.bcast(value, root=0) if self.parallel else value

    def map_shared(self, evaluate: Callable[[list[T]], list[R]], items: Sequence[T]) -> list[R]:
        """`evaluate(items)` with the items dealt round-robin over the ranks, every result
        gathered on every rank in the items' order. Collective: every rank calls it with the
        same items, so the ranks of a shared job stay in step (same results, same decisions)."""
        if not self.parallel:
            return evaluate(list(items))
        mine = list(range(self.rank, len(items), self.size))
        results = evaluate([items[i] for i in mine]) if mine else []
        gathered: list = [None] * len(items)
        for indices, part in self.comm.allgather((mine, results)):
            for index, result in zip(indices, part, strict=True):
                gathered[index] = result
        return gathered

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


def threads_per_rank(cpu_count: int, local_size: int, available: int | None = None,
                     environ: Mapping[str, str] | None = None) -> int | None:
    """Torch threads for one of `local_size` ranks on a node of `cpu_count` CPUs, or None to
    leave torch's default: a serial run, or the user chose (OMP_NUM_THREADS / MKL_NUM_THREADS).

    Each rank gets cpu_count // local_size threads, at least one, and no more than the CPUs this
    process may run on (`available`, its affinity mask: a launcher that pins ranks to cores has
    already divided them)."""
    environ = os.environ if environ is None else environ
    if local_size <= 1 or any(environ.get(name, "").strip() for name in THREAD_ENV):
        return None
    threads = max(1, cpu_count // local_size)
    if available is not None:
        threads = max(1, min(threads, available))
    return threads


def share_cores(local_rank: int, local_size: int) -> None:
    """Apply `threads_per_rank` to torch in this process; logged once, by the node's first rank."""
    cpu_count = os.cpu_count() or 1
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    threads = threads_per_rank(cpu_count, local_size, available)
    if threads is None:
        return
    try:
        import torch
    except ImportError:  # no torch, nothing to share
        return
    torch.set_num_threads(threads)
    if local_rank == 0:
        log.info("%d ranks share %d CPUs on this node: %d torch thread(s) per rank "
                 "(set OMP_NUM_THREADS to choose)", local_size, cpu_count, threads)


LAUNCHER_SIZE_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")  # Open MPI's mpirun; Hydra, srun --mpi=pmi2


def _refuse_launch_mpi_cannot_see(have_mpi4py: bool, environ: Mapping[str, str] | None = None) -> None:
    """A world of one, but a launcher says it started several ranks: every rank would run every
    job into the same files. Either mpi4py is missing, or its MPI does not speak the launcher's
    protocol (Open MPI's mpirun starting MPICH, as in the image: each rank a singleton).
    A launch whose launcher sets none of these (srun --mpi=none, one driver per task) passes."""
    environ = os.environ if environ is None else environ
    for variable in LAUNCHER_SIZE_ENV:
        value = environ.get(variable, "")
        if not (value.isdigit() and int(value) > 1):
            continue
        if not have_mpi4py:
            raise InputError(f"started by an MPI launcher with {value} ranks ({variable}) but mpi4py is not "
                             "installed; pip install 'umlip-driver[mpi]' or run without mpirun")
        from mpi4py import MPI

        library = " ".join(MPI.Get_library_version().strip().splitlines()[0].split())
        raise InputError(f"started by a launcher with {value} ranks ({variable}) but MPI ({library}) sees one: "
                         "the launcher does not match the MPI mpi4py uses; start the ranks with that MPI's "
                         "mpiexec (in the image: apptainer exec driver.sif mpiexec -n N driver run ...), "
                         "or run independent tasks with srun --mpi=none")


def _refuse_mixed_command_lines(command_lines: Sequence[Sequence[str]]) -> None:
    """Every rank must run the same command: ranks started with different recipes (say, srun
    with a PMI plugin starting one recipe per task) were joined by MPI into one world, and each
    would run a share of its own recipe's jobs and mix their results."""
    first = list(command_lines[0])
    for rank, line in enumerate(command_lines):
        if list(line) != first:
            raise InputError(f"the {len(command_lines)} MPI ranks were started with different command lines "
                             f"(rank 0: {' '.join(first)!r}, rank {rank}: {' '.join(line)!r}): one run is one "
                             "recipe over all ranks; start independent runs separately (srun --mpi=none)")


def serial_comm():
    """The communicator for ASE's dynamics, optimizers and velocity distributions in a job.

    They default to ase.parallel.world, which under mpirun is MPI's COMM_WORLD: ASE then
    broadcasts rank 0's random numbers to every rank at every step, as if all ranks ran one
    simulation. Here each rank runs jobs of its own, so a rank whose jobs end first left the
    others blocked in that broadcast for ever. Every job sees a world of one."""
    from ase.parallel import DummyMPI

    return DummyMPI()
