"""Run a validated recipe: load structure and model once, prepare each variant's start on its
own potential, then run every job into its own file."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ase import Atoms

from driver import faults, interrupt
from driver.correction import SofteningScale, resolve_softening_scale
from driver.errors import (
    DriverError,
    InputError,
    OutputError,
    ResourceError,
    first_line,
    is_out_of_memory,
)
from driver.jobs import Job
from driver.journal import base_path, journal_path
from driver.models import check_fits_in_memory, known_elements, load_model
from driver.output import H5MDWriter, recover
from driver.parallel import World
from driver.potential import Potential
from driver.provenance import host_description, now_iso, package_versions
from driver.recipe import Recipe
from driver.replicas import run_together
from driver.results import SUCCEEDED, SUMMARY_NAME, JobStatus
from driver.resume import JobOnDisk, job_on_disk, recipe_fingerprint
from driver.structure import load_structure
from driver.tasks import JobContext, JobRunner, Prepared, Share, Task, evaluate_here, task_for

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    out_dir: Path
    kind: str  # the recipe's task kind, whose report lines format the jobs
    jobs: list[dict] = field(default_factory=list)
    rank: int = 0  # parallel runs: only rank 0 reports

    @property
    def failed(self) -> list[dict]:
        return [job for job in self.jobs if job["status"] not in SUCCEEDED]


def variants(recipe: Recipe) -> list[str]:
    if recipe.correction is None:
        return ["raw"]
    return ["raw", "corrected"] if recipe.compare else ["corrected"]


def plan_jobs(recipe: Recipe) -> list[Job]:
    return task_for(recipe.task.kind).plan(recipe.task, variants(recipe))


def output_directory(recipe: Recipe, override: str | None) -> Path:
    return Path(override or recipe.output.directory or Path("runs") / recipe.name)


def prepare_output(out_dir: Path, jobs: list[Job], overwrite: bool, resume: bool = False) -> None:
    """Refuse to clobber earlier results unless asked (--resume keeps them, --overwrite deletes
    them); fail early on an unwritable folder."""
    files = [out_dir / f"{job.name}.h5" for job in jobs]
    existing = files + [path for h5 in files for path in (journal_path(h5), base_path(h5))] + [out_dir / SUMMARY_NAME]
    found = [] if resume else [p for p in existing if p.exists()]
    if found and not overwrite:
        raise InputError(f"{found[0]}: output exists; pass --resume to continue that run or --overwrite to replace it")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for path in found:
            path.unlink()
    except OSError as exc:
        raise InputError(f"{out_dir}: output directory not writable ({exc.strerror})") from None
    if not os.access(out_dir, os.W_OK):
        raise InputError(f"{out_dir}: output directory not writable")


@dataclass
class JobStart:
    """Where a variant's jobs start: the task's prepared structure on that variant's own
    potential, and the raw energy E0 there (the corrected PES's reference, recorded)."""

    prepared: Prepared
    reference_energy_eV: float


def variant_potential(variant: str, base: Potential, correction: SofteningScale | None,
                      reference_energy_eV: float) -> Potential:
    """The job's potential: the model itself for raw jobs, the recipe's correction around it for
    corrected ones. Tasks receive only this."""
    if variant == "corrected":
        assert correction is not None, "a corrected job without a correction"
        return correction.apply(base, reference_energy_eV)
    return base


def prepare_start(variant: str, structure: Atoms, model: Potential, correction: SofteningScale | None,
                  task: Task, spec) -> JobStart:
    """Run the task's `prepare` (relaxation, NEB endpoints) on the variant's own surface."""
    atoms = structure.copy()
    atoms.calc = variant_potential(variant, model, correction, model.energy(atoms)).as_calculator()
    prepared = task.prepare(atoms, spec)
    prepared.start.calc = None  # plain data from here on: broadcast under MPI, copied per job
    return JobStart(prepared, model.energy(prepared.start))


def run_job(job: Job, recipe: Recipe, start: JobStart, base: Potential, correction: SofteningScale | None,
            out_dir: Path, provenance: dict, entries: list[dict], resume=None,
            share: Share = evaluate_here) -> dict:
    """Run one job into OUT/<job>.h5 (from `resume`, continue the file it left); its summary
    entry joins `entries` before it starts (replacing the entry of an earlier segment of the
    same job), so an interrupted job is still reported as such; returns that entry.
    `share`: who evaluates the job's structures (World.map_shared for run.share_structures)."""
    task = task_for(recipe.task.kind)
    reference_energy_eV = start.reference_energy_eV
    potential = variant_potential(job.variant, base, correction, reference_energy_eV)
    atoms = start.prepared.start.copy()
    atoms.calc = potential.as_calculator()
    softening_scale = potential.provenance().get("softening_scale")
    job_provenance = {
        **provenance, **start.prepared.info, "job": job.name, "variant": job.variant,
        "temperature_K": job.temperature_K, "reference_energy_eV": reference_energy_eV, "start_time": now_iso(),
    }
    if job.variant == "corrected" and correction is not None:
        job_provenance.update(correction.provenance())
    path = out_dir / f"{job.name}.h5"
    try:
        writer = _open_writer(path, atoms, recipe, job_provenance, resume)
    except (OSError, RuntimeError) as exc:
        raise OutputError(f"{path}: cannot be written ({first_line(exc)})") from None
    if not task.streams_trajectory and resume is None:  # tasks without a trajectory store their start as one frame
        writer.append(0, 0.0, atoms, {"potential_energy": float(atoms.get_potential_energy())})
    entry = {"job": job.name, "file": path.name, "variant": job.variant,
             "temperature_K": job.temperature_K, "reference_energy_eV": reference_energy_eV,
             "softening_scale": softening_scale, "status": JobStatus.RUNNING}
    earlier = [i for i, e in enumerate(entries) if e["job"] == job.name]
    if earlier:
        entries[earlier[0]] = entry
    else:
        entries.append(entry)
    started = time.perf_counter()
    status = JobStatus.FAILED
    try:
        context = JobContext(job, recipe.task, potential, atoms, start.prepared, writer, out_dir, recipe.output,
                             resume, share, recipe.structure.file)
        result = task.run(context)
        writer.write_result(result)  # /results/<kind>, units from the result's fields
        entry.update(result.scalars())
        status = result.status()
    except OutputError as exc:  # disk full, quota, file-size limit: every later job would fail alike
        entry["error"] = str(exc)
        status = JobStatus.INTERRUPTED  # not the job's fault: --resume continues it
        raise
    except DriverError as exc:
        entry["error"] = str(exc)
        log.error("%s failed: %s", job.name, exc)
    except KeyboardInterrupt:
        status = JobStatus.INTERRUPTED
        raise
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        entry["error"] = f"out of memory on {potential.device} ({first_line(exc)})"
        raise ResourceError(f"{job.name}: {entry['error']}") from None
    finally:
        entry["wall_time_s"] = round(time.perf_counter() - started, 3)
        entry["status"] = status
        try:
            writer.write_attributes("parameters", {"end_time": now_iso()})
        except OutputError:
            pass  # the close below says what failed
        try:
            writer.close(status, entry)
        except OutputError as exc:
            log.warning("could not close cleanly: %s", exc)
    return entry


def _open_writer(path: Path, atoms: Atoms, recipe: Recipe, provenance: dict, resume) -> H5MDWriter:
    """A new job file, or (resume: Task.resume_state's answer) the file a killed job left, cut back
    to the frames its state covers."""
    if resume is None:
        return H5MDWriter(path, atoms, provenance=provenance, flush_every=recipe.output.flush_every,
                          compression=recipe.output.compression, velocities=recipe.output.velocities,
                          forces=recipe.output.forces, trajectory=recipe.output.trajectory,
                          magmoms=recipe.output.magmoms)
    writer = H5MDWriter.reopen(path, resume.frames, flush_every=recipe.output.flush_every)
    writer.write_attributes("parameters", {f"resumed_at_step_{resume.step}": now_iso()})
    log.info("%s: resuming from the checkpoint at step %d", path.stem, resume.step)
    return writer


def write_summary(out_dir: Path, recipe: Recipe, started: str, jobs: list[dict], extra: dict) -> Path:
    """Written last and atomically, so a summary on disk always describes finished jobs."""
    summary = {"recipe": recipe.name, "started": started, "finished": now_iso(), **extra, "jobs": jobs}
    path = out_dir / SUMMARY_NAME
    tmp = path.with_suffix(".json.tmp")
    try:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        faults.at("summary")
        tmp.replace(path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot be written ({first_line(exc)})") from None
    return path


def check_inputs(recipe: Recipe) -> tuple[Atoms, SofteningScale | None]:
    """Everything about a recipe that can be checked without the model, as `driver validate`
    checks it and the run does before loading the model: the structure (readable, not too large),
    the task against the structure (Task.check), the correction file against the model."""
    structure = load_structure(recipe.structure)
    task = task_for(recipe.task.kind)
    task.check(recipe.task, structure, recipe.structure)
    table = known_elements(recipe.model)  # MACE's is known once it loads: checked then (run_recipe)
    if table is not None:
        task.check_elements(recipe.task, table, structure, recipe.structure)
    correction = resolve_softening_scale(recipe.correction, recipe.model) if recipe.correction else None
    return structure, correction


def run_recipe(recipe: Recipe, recipe_text: str, out: str | None = None, overwrite: bool = False,
               world: World | None = None, resume: bool = False) -> RunReport:
    """Every rank loads the model and runs its share of the jobs; rank 0 writes summary.json."""
    world = world or World()
    task = task_for(recipe.task.kind)
    jobs = plan_jobs(recipe)
    out_dir = output_directory(recipe, out)
    world.on_root(lambda: prepare_output(out_dir, jobs, overwrite, resume))
    world.log_to_rank_file(out_dir)
    started = now_iso()
    # run.share_structures: every rank runs every job, evaluating its share of each job's
    # structures; rank 0 writes the files, the others write theirs to a scratch folder.
    sharing = recipe.run.share_structures and world.parallel
    mine = jobs if sharing else world.share(jobs)
    # --resume: read every job file first, so a damaged or foreign one stops the run before the model loads.
    # A file a kill left is rebuilt from its journal first (by rank 0 alone for shared jobs, which
    # every rank reads).
    with world.abort_on_error("resume failed", passthrough=(DriverError,)):
        if resume and sharing:
            world.on_root(lambda: [recover(out_dir / f"{job.name}.h5") for job in jobs])
        elif resume:
            for job in mine:
                recover(out_dir / f"{job.name}.h5")
        on_disk_by_job = {job.name: job_on_disk(out_dir / f"{job.name}.h5", recipe) if resume else JobOnDisk("run")
                          for job in mine}
    # Input errors are the same on every rank; anything else (one GPU out of memory) stops all.
    with world.abort_on_error("set-up failed", passthrough=(DriverError,)):
        structure, correction = check_inputs(recipe)  # all of `driver validate`, before the model loads
        check_fits_in_memory(len(structure), recipe.model, world.local_rank)
        model = load_model(recipe.model, world.local_rank, world.local_size)
        task.check_elements(recipe.task, model, structure, recipe.structure)
        if correction is not None:
            correction.check_model(model.weights_sha256)
            if world.root:  # the fit's verdict, in the console and the run log, before any job starts
                for line in correction.warning_lines():
                    log.warning("WARNING: %s", line)
    to_run = [job for job in mine if on_disk_by_job[job.name].action != "skip"]
    with world.abort_on_error("set-up failed", passthrough=(DriverError,)):
        starts = {variant: prepare_start(variant, structure, model, correction, task, recipe.task)
                  for variant in dict.fromkeys(job.variant for job in (to_run if not sharing else jobs))}
    job_dir = out_dir if world.root or not sharing else Path(tempfile.mkdtemp(prefix=f"driver-rank{world.rank}-"))
    # --resume of a shared job: every rank continues from rank 0's file, copied before the
    # broadcast below (so before rank 0 opens it for writing).
    with world.abort_on_error("resume failed"):
        for job in mine if job_dir != out_dir else []:
            if on_disk_by_job[job.name].state is not None:
                shutil.copyfile(out_dir / f"{job.name}.h5", job_dir / f"{job.name}.h5")
    if sharing:  # rank 0's starts exactly, so that the ranks of a shared job stay in step
        starts = world.broadcast(starts)
    first = next(iter(starts.values()), None)
    structure_info: dict[str, object] = {
        "n_atoms": len(first.prepared.start if first else structure),
        "formula": (first.prepared.start if first else structure).get_chemical_formula(),
    }
    provenance = {
        "recipe": recipe_text, "recipe_fingerprint": recipe_fingerprint(recipe), "recipe_name": recipe.name,
        "seed": getattr(recipe.task, "seed", None),
        "package_versions": package_versions(), "host": host_description(), "mpi_size": world.size,
        **model.provenance(), **structure_info,
    }
    report = RunReport(out_dir, recipe.task.kind, rank=world.rank)
    study: dict[str, object] = {}
    entries: list[dict] = []  # this rank's jobs
    share: Share = world.map_shared if sharing else evaluate_here
    try:
        with world.abort_on_error("job failed"):
            for job in mine:
                on_disk = on_disk_by_job[job.name]
                if on_disk.action == "skip":
                    log.info("%s: already %s; skipped (--resume)", job.name, on_disk.entry["status"])
                    entries.append(on_disk.entry)

            ran: set[str] = set()

            def run_one(job: Job, base: Potential = model) -> dict:
                """The job from where its file stands: the state --resume found, or (a job
                run again in this process, the next segment of a study) its newest checkpoint."""
                state = on_disk_by_job[job.name].state
                if job.name in ran:
                    state = current_state(task, job_dir / f"{job.name}.h5", recipe.task)
                ran.add(job.name)
                return run_job(job, recipe, starts[job.variant], base, correction, job_dir, provenance, entries,
                               state, share)

            def together(jobs_here) -> list[dict]:
                got: dict[str, dict] = {}

                def one(job: Job, base: Potential) -> None:
                    got[job.name] = run_one(job, base)

                run_together(jobs_here, model, task.needs_stress(recipe.task), one)
                return [got[job.name] for job in jobs_here if job.name in got]

            task.run_jobs(recipe.task, to_run, JobRunner(run_one, together if recipe.run.batch_replicas else None,
                                                          job_dir, entries))
            interrupt.raise_if_requested()
        report.jobs = in_job_order(jobs, world.allgather(entries if world.root or not sharing else []))
        if world.root:
            study = task.finalize(out_dir, report.jobs)
    finally:
        if job_dir != out_dir:
            shutil.rmtree(job_dir, ignore_errors=True)
        if not report.jobs:  # interrupted: what this rank knows (all of it in a serial run)
            report.jobs = in_job_order(jobs, [entries], others_unknown=world.parallel)
        if world.root:
            extra = {**model.provenance(), **structure_info}
            if first is not None:
                extra.update(first.prepared.info)
                extra["reference_energy_eV"] = first.reference_energy_eV
            if correction is not None:
                extra.update(correction.provenance())
            extra.update(study)
            write_summary(out_dir, recipe, started, report.jobs, extra)
    return report


def current_state(task: Task, path: Path, spec):
    """Task.resume_state of a job file as it stands now (the job's next segment starts there)."""
    import h5py

    with h5py.File(path, "r") as handle:
        return task.resume_state(handle, spec)


def in_job_order(jobs: list[Job], entries_per_rank: list[list[dict]], others_unknown: bool = False) -> list[dict]:
    """The summary's job list in the recipe's order; jobs no rank started read `not run`. After an
    interruption under MPI, rank 0 cannot ask the others: their jobs read `unknown` (the status
    attribute in each job's file says, and --resume reads it)."""
    by_name = {entry["job"]: entry for entries in entries_per_rank for entry in entries}
    missing = JobStatus.UNKNOWN if others_unknown else JobStatus.NOT_RUN
    return [by_name.get(job.name, {"job": job.name, "file": f"{job.name}.h5", "status": missing})
            for job in jobs]
