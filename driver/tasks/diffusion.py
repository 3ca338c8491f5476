"""A diffusion study: MD at several temperatures, each job grown segment by segment until its
tracer diffusivity is known to the precision asked (or its time or the study's budget runs out),
then Arrhenius to room temperature with intervals (driver.tasks.diffusion_study).

One job per (variant, temperature), as for MD, so that temperatures x raw/corrected spread over
MPI ranks. A job's first call runs `min_ps`; every later call one `segment_ps` more, from the
job's own checkpoint; after each, D is re-estimated from the whole file
(driver.analysis.diffusivity). Segment ends sit on a fixed grid (min_ps + k segment_ps), so a job
killed anywhere and resumed ends its segments where the uninterrupted job did and reaches the
same numbers. `run_jobs` schedules a rank's jobs in rounds: every open job gets a segment,
furthest from its target first, while the wall budget lasts.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Literal

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from pydantic import Field, field_validator, model_validator

from driver.analysis.diffusivity import DiffusionEstimate, Verdict, estimate_diffusion
from driver.ensembles import ENSEMBLES
from driver.errors import InputError
from driver.jobs import Job
from driver.results import ABSENT
from driver.schema import Float, Strict, bounded
from driver.tasks import JobRunner, Task
from driver.tasks.density import equilibrate_density
from driver.tasks.diffusion_result import DiffusionResult, StudyState
from driver.tasks.md import (
    MDIntegration,
    MDTask,
    check_cell_can_move,
    initialize_velocities,
    run_md,
    temperature_jobs,
)
from driver.tasks.md_schedule import MAX_TEMPERATURE_K

log = logging.getLogger(__name__)

MAX_PS = 1e6


class Target(Strict):
    """The precision a study asks of D at every temperature."""

    relative_error: bounded(gt=0, le=1) = Field(
        0.10, description="half-width of D's interval over D at which a temperature is done")
    confidence: bounded(gt=0.5, le=0.999) = Field(0.95, description="the interval's probability")


class DiffusionTask(MDIntegration):
    """Tracer diffusivity of `species` at each temperature to a target precision, Arrhenius fit,
    D and Nernst-Einstein σ at room temperature, raw vs corrected."""

    kind: Literal["diffusion"]
    species: list[str] = Field(min_length=1, description="the mobile species, e.g. [Li]")
    temperatures_K: list[Float] = Field(min_length=1, description="one job per temperature (and variant)")
    equilibration: Literal["auto"] | bounded(ge=0, le=MAX_PS, unit="ps") = Field(
        "auto", description="discarded from each job's start: detected from the energy (and volume) series, or a time")
    target: Target = Field(default_factory=Target, description="the precision of D at which a temperature is done")
    segment_ps: bounded(gt=0, le=MAX_PS, unit="ps") = Field(10.0, description="a job grows by this much at a time")
    min_ps: bounded(gt=0, le=MAX_PS, unit="ps") = Field(20.0, description="every job runs at least this long")
    max_ps: bounded(gt=0, le=MAX_PS, unit="ps") = Field(1000.0, description="a job stops here, target reached or not")
    wall_hours: bounded(gt=0, le=10**5, unit="h") | None = Field(
        None, description="wall-time budget of each rank's share of the study; --resume may raise it")
    room_temperature_K: bounded(gt=0, le=MAX_TEMPERATURE_K, unit="K") = Field(
        300.0, description="temperature the Arrhenius fit extrapolates D and σ to")
    min_hops_per_ion: bounded(ge=0, le=10**4) = Field(
        1.0, description="site-to-site hops per mobile ion below which a run is not diffusive")
    charges: dict[str, Float] | None = Field(
        None, description="ionic charges (e) for σ; default: pymatgen's charge-balanced guess")
    density_ps: bounded(gt=0, le=MAX_PS, unit="ps") | None = Field(
        None, description="before each temperature's first segment: this long NPT (Berendsen, at pressure_GPa), "
        "then the cell set to its mean over the second half; the study runs in `ensemble` at that density")

    @field_validator("species")
    @classmethod
    def _known_species(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in chemical_symbols[1:]]
        if unknown:
            raise ValueError(f"not chemical symbols: {unknown}")
        if len(set(value)) != len(value):
            raise ValueError(f"species repeat: {value}")
        return value

    @field_validator("temperatures_K")
    @classmethod
    def _temperatures(cls, value: list[float]) -> list[float]:
        for t in value:
            if not (math.isfinite(t) and 0 < t <= MAX_TEMPERATURE_K):
                raise ValueError(f"must be > 0 and <= {MAX_TEMPERATURE_K:g} K, got {t!r}")
        if len(set(value)) != len(value):
            raise ValueError(f"temperatures repeat: {value}")
        return value

    @model_validator(mode="after")
    def _lengths(self) -> DiffusionTask:
        if self.max_ps < self.min_ps:
            raise ValueError(f"max_ps ({self.max_ps:g}) is below min_ps ({self.min_ps:g})")
        return self

    def steps_of(self, ps: float) -> int:
        return max(1, round(ps * 1000 / self.timestep_fs))

    def segment_ends(self) -> list[int]:
        """The steps at which a job's segments end: min_ps, then every segment_ps, up to max_ps."""
        first, every, last = self.steps_of(self.min_ps), self.steps_of(self.segment_ps), self.steps_of(self.max_ps)
        return sorted({min(first + k * every, last) for k in range(0, (last - first) // every + 2)})


DENSITY_GROUP = "parameters/density_stage"  # the NPT stage's mean volume and fluctuation (task.density_ps)


def _density_stage(file) -> tuple[float, float]:
    """The density stage's (volume, fluctuation) stored in the job file, or ABSENT twice."""
    group = file.get(DENSITY_GROUP)
    if group is None or "volume_A3" not in group.attrs:
        return ABSENT, ABSENT
    return float(group.attrs["volume_A3"]), float(group.attrs["volume_std_A3"])


def _stored(file) -> DiffusionResult | None:
    group = file.get(f"results/{DiffusionResult.kind}")
    return DiffusionResult.from_h5(group) if group is not None else None


def next_segment_end(spec: DiffusionTask, step: int, analysed_step: int | None) -> int:
    """The end of the segment a job at `step` runs next: the next end on the grid at or after it,
    or the one after when the job was already analysed there."""
    ends = spec.segment_ends()
    for end in ends:
        if end > step or (end == step and end != analysed_step):
            return end
    return ends[-1]


def _estimate(writer, mobile: np.ndarray, spec: DiffusionTask) -> tuple[DiffusionEstimate, float, float]:
    """D from the whole file so far; also its mean temperature and volume."""
    frames = writer.frames
    particles = writer.file["particles/all"]
    positions = particles["position/value"][:frames]
    cells = particles["box/edges/value"][:frames]
    times = particles["position/time"][:frames]
    observables = writer.file["observables"]
    volume = observables["volume/value"][:frames] if "volume" in observables else None
    estimate = estimate_diffusion(
        times, positions, cells, mobile, energy=observables["potential_energy/value"][:frames],
        volume=volume, equilibration_fs=None if spec.equilibration == "auto" else spec.equilibration * 1000,
        confidence=spec.target.confidence, min_hops_per_ion=spec.min_hops_per_ion, seed=spec.seed)
    mean_volume = float(np.mean(np.abs(np.linalg.det(cells))))
    return estimate, float(np.mean(writer.series("temperature"))), mean_volume


def _haven_fields(estimate: DiffusionEstimate, confidence: float) -> dict[str, object]:
    """The result's Haven-ratio fields: H with its interval where the collective MSD resolves D_σ."""
    haven = estimate.haven
    if haven is None:
        return {"collective_diffusivity_cm2_s": None, "haven_ratio": None, "haven_low": None, "haven_high": None,
                "haven_note": "not diffusive: no Haven ratio", "haven_samples": np.zeros(0)}
    quantiles = haven.quantiles(confidence)
    low, median, high = quantiles if quantiles is not None else (None, None, None)
    return {"collective_diffusivity_cm2_s": haven.collective_cm2_s, "haven_ratio": median, "haven_low": low,
            "haven_high": high, "haven_note": haven.reason,
            "haven_samples": haven.samples if haven.samples is not None else np.zeros(0)}


def _state(estimate: DiffusionEstimate, spec: DiffusionTask, step: int) -> str:
    if estimate.verdict is Verdict.HOST_DISORDERED:
        return StudyState.HOST_DISORDERED
    width = estimate.relative_half_width
    if estimate.usable and width is not None and width <= spec.target.relative_error and step >= spec.steps_of(spec.min_ps):
        return StudyState.CONVERGED
    return StudyState.NOT_REACHED if step >= spec.steps_of(spec.max_ps) else StudyState.RUNNING


class DiffusionTaskKind(Task[DiffusionTask, DiffusionResult]):
    kind = "diffusion"
    spec = DiffusionTask
    result = DiffusionResult
    streams_trajectory = True
    batches_replicas = True
    resume_may_change = ("wall_hours",)

    def plan(self, spec: DiffusionTask, variants) -> list[Job]:
        return temperature_jobs(variants, spec.temperatures_K)

    def check(self, spec: DiffusionTask, atoms: Atoms, structure) -> None:
        super().check(spec, atoms, structure)
        present = set(atoms.get_chemical_symbols())
        missing = [s for s in spec.species if s not in present]
        if missing:
            raise InputError(f"{structure.file}: task.species: {missing} not in the structure "
                             f"(it has {sorted(present)})")
        check_cell_can_move(spec.ensemble, atoms)
        if spec.density_ps is not None and not atoms.pbc.all():
            raise InputError(f"{structure.file}: task.density_ps: the NPT density stage changes the cell; the "
                             f"structure is not periodic in all three directions (pbc {atoms.pbc.tolist()})")

    def needs_stress(self, spec: DiffusionTask) -> bool:
        return ENSEMBLES[spec.ensemble].moves_cell or spec.density_ps is not None

    def resume_state(self, file, spec: DiffusionTask):
        from driver.checkpoint import read_latest

        return read_latest(file)

    def run(self, context) -> DiffusionResult:
        """One segment: MD from the job's checkpoint (or a seeded start) to the next segment end,
        then D re-estimated from everything stored."""
        spec: DiffusionTask = context.spec
        temperature = context.job.temperature_K
        previous = _stored(context.writer.file)
        step = context.resume.step if context.resume is not None else 0
        end = next_segment_end(spec, step, previous.analysed_step if previous else None)
        density = _density_stage(context.writer.file)
        if context.resume is None:
            initialize_velocities(context.atoms, temperature, spec.seed)
            if spec.density_ps is not None:
                stage = equilibrate_density(context.atoms, spec, temperature, context.job.name)
                density = (stage.volume_A3, stage.volume_std_A3)
                # kept beside the trajectory: a job killed before its first result resumes from a
                # checkpoint taken after the stage and must still report it
                context.writer.write_attributes(DENSITY_GROUP, {"volume_A3": density[0], "volume_std_A3": density[1]})
                log.info("%s: density stage %g ps NPT: volume %.2f -> %.2f ± %.2f Å³", context.job.name,
                         spec.density_ps, stage.start_volume_A3, stage.volume_A3, stage.volume_std_A3)
        md = MDTask(kind="md", steps=end, temperature_K=temperature, **spec.integration())
        started = time.perf_counter()
        run_md(context.atoms, md, temperature, context.writer, context.output.write_every, context.job.name,
               checkpoint_every=context.output.checkpoint_every, resume=context.resume)
        md_wall = time.perf_counter() - started
        mobile = np.isin(context.atoms.get_chemical_symbols(), spec.species)
        estimate, mean_t, mean_volume = _estimate(context.writer, mobile, spec)
        simulated_ps = end * spec.timestep_fs / 1000
        history_ps = list(previous.history_ps) if previous is not None and previous.history_ps is not None else []
        history_width = (list(previous.history_relative_half_width)
                         if previous is not None and previous.history_relative_half_width is not None else [])
        keep = [i for i, t in enumerate(history_ps) if t < simulated_ps - 1e-9]
        width = estimate.relative_half_width
        result = DiffusionResult(
            state=_state(estimate, spec, end), verdict=str(estimate.verdict), reason=estimate.reason,
            species=list(spec.species), n_mobile=int(mobile.sum()),
            diffusivity_cm2_s=estimate.diffusivity_cm2_s if estimate.usable else None,
            interval_low_cm2_s=estimate.interval_cm2_s[0] if estimate.interval_cm2_s else None,
            interval_high_cm2_s=estimate.interval_cm2_s[1] if estimate.interval_cm2_s else None,
            relative_half_width=width if estimate.usable else None, upper_bound_cm2_s=estimate.upper_bound_cm2_s,
            confidence=spec.target.confidence, target_relative_error=spec.target.relative_error,
            hops=estimate.hops, hops_per_ion=estimate.hops_per_ion, host_site_fraction=estimate.host_site_fraction,
            equilibration_ps=estimate.equilibration_fs / 1000,
            window_start_ps=estimate.window_fs[0] / 1000 if estimate.window_fs else None,
            window_stop_ps=estimate.window_fs[1] / 1000 if estimate.window_fs else None,
            simulated_ps=simulated_ps, analysed_step=end,
            md_wall_time_s=(previous.md_wall_time_s if previous is not None else 0.0) + md_wall,
            mean_temperature_K=mean_t, mean_volume_A3=mean_volume, room_temperature_K=spec.room_temperature_K,
            charge_e=_charge(spec, context.atoms), **_haven_fields(estimate, spec.target.confidence),
            density_volume_A3=density[0], density_volume_std_A3=density[1],
            diffusivity_samples_cm2_s=estimate.samples_cm2_s if estimate.samples_cm2_s is not None else np.zeros(0),
            msd_lags_ps=estimate.lags_fs / 1000, msd_A2=estimate.msd_A2,
            history_ps=np.array([history_ps[i] for i in keep] + [simulated_ps]),
            history_relative_half_width=np.array([history_width[i] for i in keep]
                                                 + [width if (width is not None and estimate.usable) else np.nan]),
        )
        log.info("%s: %.4g ps, %s", context.job.name, simulated_ps, _progress_text(result))
        return result

    def run_jobs(self, spec: DiffusionTask, jobs: list[Job], runner: JobRunner) -> None:
        from driver.tasks.diffusion_study import schedule

        schedule(self, spec, jobs, runner)

    def report_line(self, entry: dict, result: DiffusionResult) -> str:
        return f"  {entry['file']:<24} {result.simulated_ps:g} ps, {_progress_text(result)}"

    def finalize(self, out_dir, entries: list[dict]) -> dict[str, object]:
        from driver.tasks.diffusion_study import study_summary

        return study_summary(out_dir, entries)

    def comparison_line(self, name: str, raw: DiffusionResult, corrected: DiffusionResult,
                        scale: float | None) -> str | None:
        if raw.diffusivity_cm2_s is None or corrected.diffusivity_cm2_s is None:
            return None
        return (f"  {name[len('corrected-'):]}: corrected/raw D = "
                f"{corrected.diffusivity_cm2_s / raw.diffusivity_cm2_s:.3g} (driver compare gives its interval "
                "and the correction's prediction D_raw(s·T)/sqrt(s))")

    def compare_section(self, jobs, options):
        from driver.tasks.diffusion_compare import compare_section

        return compare_section(jobs, options)


def _charge(spec: DiffusionTask, atoms: Atoms) -> float | None:
    """The mobile species' ionic charge (the recipe's, else pymatgen's charge-balanced guess);
    None for several mobile species or a neutral one (no Nernst-Einstein σ)."""
    if len(spec.species) != 1:
        return None
    if spec.charges is not None and spec.species[0] in spec.charges:
        charge = spec.charges[spec.species[0]]
    else:
        from driver.analysis.md import default_charges

        charge = default_charges(atoms.get_chemical_symbols()).get(spec.species[0], 0.0)
    return float(charge) or None


def _progress_text(result: DiffusionResult) -> str:
    """D with its interval, or what stands in for it; hops; the state."""
    if result.diffusivity_cm2_s is not None:
        d = (f"D = {result.diffusivity_cm2_s:.3g} cm²/s [{result.interval_low_cm2_s:.3g}, "
             f"{result.interval_high_cm2_s:.3g}] (±{result.relative_half_width:.1%}, target "
             f"{result.target_relative_error:.0%})")
    elif result.verdict == Verdict.NOT_DIFFUSIVE:
        bound = f"D < {result.upper_bound_cm2_s:.2g} cm²/s" if result.upper_bound_cm2_s is not None else "no D"
        d = f"not diffusive ({result.reason}): {bound}"
    else:
        d = f"{result.verdict}: {result.reason}"
    return f"{d}, {result.hops} hops ({result.hops_per_ion:.2g}/ion), {result.state}"


TASK = DiffusionTaskKind()
