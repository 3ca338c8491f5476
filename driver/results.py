"""How a job ended, in one place: the status every module writes, reads and groups by.

A job's status is written to its HDF5 file (the root attribute `status`), to its summary.json
entry and to the run report; `--resume`, `driver compare` and the exit code read it back. The
groups below say which statuses count for what, so no module keeps a tuple of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

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
