"""Tasks: one module per task kind, each declaring everything the rest of the driver asks of it.

A task module defines `TASK`, an instance of a `Task` subclass: its recipe spec (`task:` block),
its result type (a driver.results.TaskResult, whose fields declare their units), how it plans
jobs, what it prepares before a job (relaxation, NEB endpoints) on the job's own potential, how it
runs a job, its line in the run report, its raw-vs-corrected relation and its section of `driver
compare`. The runner, resume, output, report and compare read these instead of switching on
kinds. A task receives "the job's potential" and never knows which model or correction it is.
Built-in kinds are TASK_MODULES; `register` adds one from outside the package (the tests do).
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from ase import Atoms

from driver import interrupt
from driver.jobs import Job
from driver.results import WITH_RESULTS, TaskResult

if TYPE_CHECKING:
    import h5py

    from driver.output import H5MDWriter
    from driver.potential import Potential
    from driver.specs import OutputSpec, StructureSpec

TASK_MODULES = ("driver.tasks.md", "driver.tasks.phonons", "driver.tasks.neb", "driver.tasks.relax",
                "driver.tasks.eos", "driver.tasks.elastic", "driver.tasks.single_point",
                "driver.tasks.diffusion")

log = logging.getLogger(__name__)

DEFAULT_MIN_DISTANCE_A = 0.5

SpecT = TypeVar("SpecT")
ResultT = TypeVar("ResultT", bound=TaskResult)

Share = Callable[[Callable[[list], list], Sequence], list]


def evaluate_here(evaluate: Callable[[list], list], items: Sequence) -> list:
    """A job run by one rank evaluates all its structures itself."""
    return evaluate(list(items))


@dataclass
class Prepared:
    """What a task's `prepare` made for a job: the structure it starts from (relaxed, or an NEB
    endpoint) and scalars for the job's provenance and summary entry."""

    start: Atoms
    info: dict[str, object] = field(default_factory=dict)


def prerelaxed(atoms: Atoms, spec) -> Prepared:
    """The start of a task on a crystal (phonons, EOS, elastic): positions and, unless told not
    to, the cell relaxed on the job's potential (`spec`: a driver.relax.CellRelaxSpec, or None)."""
    if spec is None:
        return Prepared(atoms)
    from driver.relax import relax

    outcome = relax(atoms, spec.fmax_eV_A, spec.max_steps, cell=spec.relax_cell, label="pre-relaxation")
    return Prepared(atoms, {"prerelax_converged": outcome.converged, "prerelax_steps": outcome.steps,
                            "relaxed_cell_A": atoms.cell[:].round(8).tolist()})


@dataclass
class JobContext:
    job: Job
    spec: Any  # the task's recipe spec (its `spec` class)
    potential: Potential  # the job's potential: raw, corrected or fine-tuned, the task cannot tell
    atoms: Atoms  # the prepared start, with `potential.as_calculator()` attached
    prepared: Prepared
    writer: H5MDWriter
    out_dir: Path
    output: OutputSpec
    resume: Any = None  # `driver run --resume`: Task.resume_state's answer, the state this job continues from
    share: Share = evaluate_here  # run.share_structures: World.map_shared, the ranks evaluate together
    structure_file: str = ""  # the recipe's structure file, for tasks that read all its frames


@dataclass
class JobRunner:
    """What the runner hands a task to run this rank's jobs: `one(job)` runs a job, or continues
    it from its own file when it ran before (in this process or a killed one), and returns its
    summary entry; `together(jobs)` runs several side by side, one batched model call per step
    (run.batch_replicas), and returns their entries, or is None; `out_dir` holds the job files;
    `entries` this rank's summary entries (a task may add one for a job it did not run)."""

    one: Callable[[Job], dict]
    together: Callable[[Sequence[Job]], list[dict]] | None
    out_dir: Path
    entries: list[dict]


@dataclass
class FinishedJob:
    """A job `driver compare` reads: its summary entry and its file."""

    entry: dict
    path: Path

    @property
    def name(self) -> str:
        return self.entry["job"]


def softening_scale_of(jobs: Sequence[FinishedJob]) -> float | None:
    """The run's correction scale (its corrected jobs carry it), or None without a correction."""
    return next((job.entry["softening_scale"] for job in jobs if job.entry.get("softening_scale")), None)


@dataclass
class CompareOptions:
    """What `driver compare` was asked for; `charges` are the MD analysis's (the diffusivity
    estimator chooses each job's window itself)."""

    out_dir: Path
    charges: dict[str, float] | None = None
    plots: bool = True


@dataclass
class CompareSection:
    """One task kind's part of `driver compare` and report.md: tables ("title\nmarkdown"), the
    measured raw-vs-corrected relations beside the correction's predictions, notes, plot files."""

    tables: list[str] = field(default_factory=list)
    relations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)


def table_number(value: float | None, spec: str = ".3g") -> str:
    """A number for a compare table: "–" where there is none (None, NaN, inf)."""
    return "–" if value is None or not math.isfinite(value) else format(value, spec)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A pipe table (GitHub Markdown), as compare sections print it and report.md renders it."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


class Task(Generic[SpecT, ResultT]):
    """The protocol, generic over the task's recipe spec and its result type; the defaults suit a
    task with one job per variant and no trajectory."""

    kind: ClassVar[str]
    spec: ClassVar[type]
    result: ClassVar[type[TaskResult]]  # what `run` returns; its fields declare the units
    streams_trajectory: ClassVar[bool] = False  # MD writes frames; others store their start as one
    batches_replicas: ClassVar[bool] = False  # run.batch_replicas: its jobs can step side by side
    shares_structures: ClassVar[bool] = False  # run.share_structures: a job's structures split over ranks
    resume_may_change: ClassVar[tuple[str, ...]] = ()  # task fields --resume accepts changed (a budget)

    def check(self, spec, atoms: Atoms, structure: StructureSpec) -> None:
        """Model-free checks of the task against its starting structure, raising InputError:
        run by `driver validate` and by the runner before the model loads, so that nothing the
        run would refuse later gets through validate. The default: no two atoms of the start
        closer than the task's min_distance_A (0.5 Å where it has none)."""
        from driver.structure import check_min_distance

        check_min_distance(atoms, getattr(spec, "min_distance_A", DEFAULT_MIN_DISTANCE_A),
                           "structure: the starting structure's")

    def check_elements(self, spec, potential: Potential, atoms: Atoms, structure: StructureSpec) -> None:
        """Once the model is loaded, before any job: every structure the task will evaluate has
        only elements the model has parameters for (InputError otherwise). The default: the start."""
        from driver.potential import check_elements

        check_elements(potential, atoms, f"{structure.file}: structure.file")

    def plan(self, spec, variants: Sequence[str]) -> list[Job]:
        return [Job(variant, variant) for variant in variants]

    def needs_stress(self, spec) -> bool:
        return False

    def run_jobs(self, spec, jobs: list[Job], runner: JobRunner) -> None:
        """Run this rank's jobs. The default: side by side where the recipe asks for it, else one
        after another. A task whose jobs grow in segments (diffusion) schedules them itself."""
        if runner.together is not None and len(jobs) > 1:
            runner.together(jobs)
            return
        for number, job in enumerate(jobs, start=1):
            interrupt.raise_if_requested()  # a signal that came after the last job's last check
            log.info("running %s (job %d of %d on this rank)", job.name, number, len(jobs))
            runner.one(job)

    def prepare(self, atoms: Atoms, spec) -> Prepared:
        """`atoms` carries the job's potential; the default starts from the structure as given."""
        return Prepared(atoms)

    def run(self, context: JobContext) -> ResultT:
        """Compute the job's result; the runner stores it (summary entry and /results/<kind>)."""
        raise NotImplementedError

    def resume_state(self, file: h5py.File, spec) -> Any:
        """`driver run --resume` of an unfinished job: the state it continues from, read from its
        own file (which the runner then reopens, keeping `state.frames` trajectory frames, and
        hands the task as `context.resume`), or None to start it again. The default: what
        driver.points stored (the points a point-wise task finished; it skips those)."""
        from driver.points import resume_state

        return resume_state(file)

    def report_line(self, entry: dict, result: ResultT) -> str:
        """One line for a finished job: `entry` its summary entry (file, status, plot), `result`
        the task's result read from it (TaskResult.from_summary: scalars only)."""
        return f"  {entry['file']:<24} {entry['status']}"

    def comparison_line(self, name: str, raw: ResultT, corrected: ResultT, scale: float | None) -> str | None:
        """Raw vs corrected for one pair of jobs (`name`: the corrected job's), beside what the
        scalar correction of softening scale `scale` predicts (driver.correction.expected_ratio)."""
        return None

    def finalize(self, out_dir: Path, entries: list[dict]) -> dict[str, object]:
        """After every job of the run (rank 0): plots and results across jobs; what it returns
        joins summary.json (a diffusion study's Arrhenius fit)."""
        return {}

    def compare_section(self, jobs: list[FinishedJob], options: CompareOptions) -> CompareSection:
        """This kind's part of `driver compare`. The default: each job's report line, and the same
        raw-vs-corrected lines the run report prints."""
        table = "\n".join([f"{self.kind}:", *(job_line(self, job.entry) for job in jobs)])
        relations = [line.strip() for line in comparison_lines(self, [job.entry for job in jobs])]
        return CompareSection(tables=[table], relations=relations)


def job_line(task: Task, entry: dict) -> str:
    """A job's report line: the task's for a job with results, else its status (and error)."""
    if entry["status"] not in WITH_RESULTS:
        return f"  {entry['file']:<24} {entry['status']}" + (f": {entry['error']}" if entry.get("error") else "")
    return task.report_line(entry, task.result.from_summary(entry))


def comparison_lines(task: Task, entries: Sequence[dict]) -> list[str]:
    """Raw vs corrected for each pair of finished jobs (corrected-X beside raw-X), beside what the
    scalar correction predicts: the run report and `driver compare` print the same lines."""
    by_name = {entry["job"]: entry for entry in entries if entry.get("status") in WITH_RESULTS}
    lines = []
    for name, corrected in by_name.items():
        raw = by_name.get("raw" + name[len("corrected"):]) if name.startswith("corrected") else None
        if raw is None:
            continue
        line = task.comparison_line(name, task.result.from_summary(raw), task.result.from_summary(corrected),
                                    corrected.get("softening_scale"))
        if line:
            lines += line.splitlines()
    return lines


_TASKS: dict[str, Task] = {}


def tasks() -> dict[str, Task]:
    if not _TASKS:
        for module in TASK_MODULES:
            task = importlib.import_module(module).TASK
            _TASKS[task.kind] = task
    return _TASKS


def register(task: Task) -> None:
    """Add (or replace) a task kind; recipes can name it from then on (driver.recipe reads the
    registry each time it parses one)."""
    tasks()[task.kind] = task


def unregister(kind: str) -> None:
    tasks().pop(kind, None)


def task_for(kind: str) -> Task:
    return tasks()[kind]


def task_kinds() -> tuple[str, ...]:
    return tuple(tasks())
