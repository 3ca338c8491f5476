"""What one temperature of a diffusion study holds after its latest segment (the job's typed
result), and the states a job moves through; read by the task, the schedule and the compare."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from driver.results import JobStatus, TaskResult, array, scalar


class StudyState:
    """Where a job stands after a segment (the `state` field of its result)."""

    RUNNING = "running"  # wants another segment
    CONVERGED = "target reached"
    NOT_REACHED = "target not reached"  # at max_ps
    HOST_DISORDERED = "host disordered"  # stopped: more MD does not make a crystal of a melt
    BUDGET = "wall budget used"


@dataclass
class DiffusionResult(TaskResult):
    """One temperature of a study after its latest segment: D with its interval (or an upper
    bound, or a reason), hops, windows, and the trace of the interval against simulated time."""

    kind: ClassVar[str] = "diffusion"
    state: str = scalar()
    verdict: str = scalar()  # driver.analysis.diffusivity.Verdict
    reason: str = scalar()
    species: list[str] = scalar()
    n_mobile: int = scalar()
    diffusivity_cm2_s: float | None = scalar("cm2 s-1")  # posterior median; None unless diffusive
    interval_low_cm2_s: float | None = scalar("cm2 s-1")
    interval_high_cm2_s: float | None = scalar("cm2 s-1")
    relative_half_width: float | None = scalar()
    upper_bound_cm2_s: float | None = scalar("cm2 s-1")  # not diffusive: D is below this
    confidence: float = scalar()
    target_relative_error: float = scalar()
    hops: int = scalar()
    hops_per_ion: float = scalar()
    host_site_fraction: float = scalar()
    equilibration_ps: float = scalar("ps")
    window_start_ps: float | None = scalar("ps")
    window_stop_ps: float | None = scalar("ps")
    simulated_ps: float = scalar("ps")
    analysed_step: int = scalar()
    md_wall_time_s: float = scalar("s")  # all segments, across resumes
    mean_temperature_K: float = scalar("K")
    mean_volume_A3: float = scalar("Angstrom3")
    room_temperature_K: float = scalar("K")  # where the study extrapolates to
    charge_e: float | None = scalar("e")  # of the one mobile species, for σ (None: several, or neutral)
    collective_diffusivity_cm2_s: float | None = scalar("cm2 s-1")  # D_σ from the collective MSD (diffusive runs)
    haven_ratio: float | None = scalar()  # D*/D_σ, posterior median, where D_σ is resolved
    haven_low: float | None = scalar()
    haven_high: float | None = scalar()
    haven_note: str = scalar()  # why H was not estimated (empty where it was)
    # task.density_ps only: the NPT stage's mean volume and its fluctuation (absent without the stage)
    density_volume_A3: float = scalar("Angstrom3", optional=True)
    density_volume_std_A3: float = scalar("Angstrom3", optional=True)
    diffusivity_samples_cm2_s: np.ndarray | None = array("cm2 s-1")
    msd_lags_ps: np.ndarray | None = array("ps")
    msd_A2: np.ndarray | None = array("Angstrom2")
    history_ps: np.ndarray | None = array("ps")  # simulated time at each segment's end
    history_relative_half_width: np.ndarray | None = array(None)  # NaN where not diffusive
    haven_samples: np.ndarray | None = array(None)  # of H, for σ; empty where not estimated

    def status(self) -> JobStatus:
        return {StudyState.RUNNING: JobStatus.RUNNING, StudyState.CONVERGED: JobStatus.COMPLETED,
                StudyState.NOT_REACHED: JobStatus.NOT_CONVERGED, StudyState.HOST_DISORDERED: JobStatus.SUSPECT,
                StudyState.BUDGET: JobStatus.INTERRUPTED}[self.state]

    @property
    def distance_from_target(self) -> float:
        """How far the interval is from the target (inf without one): who gets the next segment."""
        if self.relative_half_width is None:
            return math.inf
        return self.relative_half_width / self.target_relative_error
