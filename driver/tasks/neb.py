"""Migration barriers with ASE's NEB (`task.kind: neb`), all moving images in one model call.

ASE's NEB evaluates images one at a time; `BatchedNEB` evaluates them together first (through
the model's own batching) and hands ASE the results, so ASE's tangents, springs, climbing image
and optimizers are used unchanged. For the scalar softening correction the path is the raw path
and every barrier is the raw one divided by s.

A finished band is checked (driver.tasks.neb_sanity: a job that fails reads `suspect`), and the
band is checkpointed in the job's file as it goes (driver.tasks.neb_restart, `--resume`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.geometry import find_mic
from ase.io import write
from ase.mep import NEB
from ase.mep.neb import NEBOptimizer
from ase.optimize import BFGS, FIRE
from ase.utils.forcecurve import fit_images
from pydantic import Field

from driver import interrupt
from driver.correction import EXPECTED_RATIO_TEXT, expected_ratio
from driver.observers import StepObservers
from driver.parallel import serial_comm
from driver.potential import Results, check_elements
from driver.progress import Progress
from driver.relax import relax
from driver.results import TaskResult, array, read_result, scalar
from driver.schema import Bool, bounded
from driver.structure import check_min_distance
from driver.tasks import Prepared, Task, neb_restart
from driver.tasks.hop_geometry import check_hop_well_posed
from driver.tasks.neb_endpoints import EndpointsSpec, build_endpoints
from driver.tasks.neb_sanity import hop_atom_shift, suspect_reasons

if TYPE_CHECKING:
    from driver.specs import StructureSpec

log = logging.getLogger(__name__)

Evaluator = Callable[[Sequence[Atoms]], list[Results]]


MAX_IMAGES = 100
LONG_HOP_A = 6.0  # a hop longer than this is warned about at validate: not a nearest-neighbour hop
SADDLE_TIE_EV = 1e-4  # image energies this close to the highest tie with it (float32 energies: ~1e-5 eV steps)
ENDPOINT_SUMMARY_KEYS = ("hop_atom", "hop_length_A", "initial_endpoint_hop_shift_A", "final_endpoint_hop_shift_A")  # NEBResult's


class NEBTask(EndpointsSpec):
    """Minimum-energy path between two endpoints with ASE's NEB; one job per variant. The
    endpoints (`final`, `vacancy_hop` or `interstitial_hop`) are driver.tasks.neb_endpoints'."""

    kind: Literal["neb"]
    relax_endpoints: Bool = Field(True, description="relax both endpoints' positions (cell fixed, FIRE) before "
                                  "the band is interpolated")
    endpoint_fmax_eV_A: bounded(gt=0, le=100, unit="eV/Å") = Field(
        0.02, description="an endpoint's relaxation is converged when every force is below this")
    endpoint_max_steps: bounded(int, ge=1, le=10**7) = Field(
        500, description="FIRE steps at most per endpoint; unconverged, the band starts from the last structure")
    endpoint_max_shift_fraction: bounded(gt=0, le=10) = Field(
        0.3, description="a job is suspect when relaxing an endpoint moves the hopping atom by more than this "
        "fraction of the hop length")
    n_images: bounded(int, ge=1, le=MAX_IMAGES) = Field(5, description="intermediate images")
    interpolation: Literal["idpp", "linear"] = Field(
        "idpp", description="initial band between the endpoints (minimum image): idpp (image-dependent pair "
        "potential) or linear")
    climb: Bool = Field(True, description="climbing image: the highest image climbs to the saddle point")
    method: Literal["improvedtangent", "aseneb", "eb", "spline", "string"] = Field(
        "improvedtangent", description="ASE's NEB method: improvedtangent (Henkelman-Jónsson tangent), aseneb "
        "(ASE's legacy), eb (full spring force), spline or string (Makri et al.)")
    optimizer: Literal["fire", "bfgs", "ode"] = Field(
        "fire", description="band optimizer: ASE's FIRE or BFGS, or ode (ASE's NEBOptimizer, ODE method)")
    fmax_eV_A: bounded(gt=0, le=100, unit="eV/Å") = Field(
        0.05, description="the band is converged when its largest image force (ASE's NEB residual) is below this")
    max_steps: bounded(int, ge=1, le=10**7) = Field(
        500, description="optimizer iterations at most; unconverged, the last band is kept and reported so")
    spring_constant_eV_A2: bounded(gt=0, le=100, unit="eV/Å^2") = Field(
        0.1, description="spring constant k between neighbouring images (ASE's NEB k)")
    min_distance_A: bounded(gt=0, le=5, unit="Å") = Field(0.5, description="refuse endpoints with two atoms closer")
    batched: Bool | Literal["auto"] = Field("auto", description="all moving images in one model call per "
                                           "iteration; auto: timed both ways on the first iteration, the faster kept")
    batch_size: bounded(int, ge=1, le=10**5) | None = Field(
        None, description="images per model call at most; null: as many as the memory holds")
    checkpoint_every: bounded(int, ge=1, le=10**7) = Field(
        10, description="NEB iterations between restart checkpoints in the job's file (driver run --resume)")


@dataclass
class NEBResult(TaskResult):
    """The converged (or last) band, its barriers, the optimisation history and the sanity verdict
    (driver.tasks.neb_sanity); the endpoint fields come from the variant's own endpoints."""

    kind: ClassVar[str] = "neb"
    converged: bool = scalar()
    iterations: int = scalar()
    model_calls: int = scalar()
    max_force_eV_A: float = scalar("eV Angstrom-1")
    barrier_eV: float = scalar("eV")
    backward_barrier_eV: float = scalar("eV")
    reaction_energy_eV: float = scalar("eV")
    barrier_spline_eV: float = scalar("eV")
    saddle_image: int = scalar()
    n_images: int = scalar()
    suspect: bool = scalar()
    suspect_reasons: list[str] = scalar()
    band_file: str = scalar()
    hop_atom: int | None = scalar(optional=True)
    hop_length_A: float | None = scalar("Angstrom", optional=True)
    initial_endpoint_hop_shift_A: float | None = scalar("Angstrom", optional=True)
    final_endpoint_hop_shift_A: float | None = scalar("Angstrom", optional=True)
    iteration_energies_eV: np.ndarray = array("eV")
    iteration_max_force_eV_A: np.ndarray = array("eV Angstrom-1")
    image_energies_eV: np.ndarray = array("eV")
    image_positions_A: np.ndarray = array("Angstrom")
    reaction_coordinate_A: np.ndarray = array("Angstrom")
    mep_energies_eV: np.ndarray = array("eV")
    spline_coordinate_A: np.ndarray = array("Angstrom")
    spline_energies_eV: np.ndarray = array("eV")


@dataclass
class NEBPrepared(Prepared):
    """The initial endpoint is the job's start; the final one travels beside it."""

    final: Atoms | None = None


def prepare_endpoints(atoms: Atoms, task: NEBTask) -> NEBPrepared:
    """Both endpoints from the recipe's structure, relaxed at fixed cell on the job's potential."""
    initial, final, info = build_endpoints(atoms, task)
    initial.calc = final.calc = atoms.calc
    if task.relax_endpoints:
        for name, endpoint in (("initial", initial), ("final", final)):
            built = endpoint.positions[info["hop_atom"]].copy()
            outcome = relax(endpoint, task.endpoint_fmax_eV_A, task.endpoint_max_steps, label=f"{name} endpoint")
            info[f"{name}_endpoint_relaxed"] = outcome.converged
            info[f"{name}_endpoint_hop_shift_A"] = hop_atom_shift(built, endpoint, info["hop_atom"])
    info["final_endpoint_energy_eV"] = float(final.get_potential_energy())
    final.calc = None
    return NEBPrepared(initial, info, final)


class BatchedNEB(NEB):
    """ASE's NEB with the moving images evaluated together by `evaluate` before each force call.

    ASE's optimizers ask for the forces of one band several times per step (FIRE and BFGS call
    `get_gradient` up to three times); the model runs only when the moving images have moved."""

    def __init__(self, images: list[Atoms], evaluate: Evaluator, **kwargs):
        super().__init__(images, allow_shared_calculator=True, **kwargs)
        self.evaluate = evaluate
        self.image_max_forces = np.zeros(len(images) - 2)
        self.model_calls = 0
        self._evaluated_at: np.ndarray | None = None

    def attach_results(self, images: Sequence[Atoms]) -> None:
        for image, result in zip(images, self.evaluate(images), strict=True):
            image.calc = SinglePointCalculator(image, energy=result.energy, forces=result.forces)
        self.model_calls += 1

    def _moving_positions(self) -> np.ndarray:
        return np.array([image.positions for image in self.images[1:-1]])

    def get_forces(self):
        positions = self._moving_positions()
        if self._evaluated_at is None or not np.array_equal(positions, self._evaluated_at):
            self.attach_results(self.images[1:-1])
            self._evaluated_at = positions
        forces = super().get_forces()
        per_image = forces.reshape(len(self.images) - 2, -1, 3)
        self.image_max_forces = np.linalg.norm(per_image, axis=2).max(axis=1)
        return forces

    def forget_results(self) -> None:
        """Make the next `get_forces` run the model even if no image moved (benchmarks time one
        NEB iteration's model call this way)."""
        self._evaluated_at = None

    def converged_to(self, fmax: float) -> bool:
        """Whether the band at its current positions meets `fmax` (ASE's NEB residual, with the
        climbing image's full force). Asked of the band itself because ASE's ODE optimiser
        returns normally when it runs out of steps."""
        self.get_forces()
        return bool(self.get_residual() <= fmax)


def make_optimizer(neb: BatchedNEB, name: str):
    optimizer = _optimizer(neb, name)
    optimizer.comm = serial_comm()  # a world of one, see driver.parallel.serial_comm
    return optimizer


def _optimizer(neb: BatchedNEB, name: str):
    if name == "fire":
        return FIRE(neb, logfile=None)
    if name == "bfgs":
        return BFGS(neb, logfile=None)
    return NEBOptimizer(neb, method="ode", logfile=None)


def evaluator_for(context) -> Evaluator:
    """The job's potential on the moving images, batched where that pays (and shared among the
    ranks under run.share_structures)."""
    task: NEBTask = context.spec

    def evaluate(images: Sequence[Atoms]) -> list[Results]:
        return context.share(lambda part: context.potential.evaluate(
            part, ("energy", "forces"), batched=task.batched, batch_size=task.batch_size), images)

    return evaluate


def build_band(initial: Atoms, final: Atoms, task: NEBTask, evaluate: Evaluator, resume=None) -> BatchedNEB:
    """The interpolated band, or (`resume`, a neb_restart checkpoint) the band it stored."""
    images = [initial.copy() for _ in range(task.n_images + 1)] + [final.copy()]
    if resume is not None:
        neb_restart.restore_band(resume, images)
    else:
        # Interpolate on a plain NEB: ASE's IDPP optimises the object it is given against its own
        # surrogate calculators, which BatchedNEB.get_forces would replace with the model's results.
        NEB(images, method=task.method, world=serial_comm()).interpolate(method=task.interpolation, mic=True)
    neb = BatchedNEB(images, evaluate, k=task.spring_constant_eV_A2, climb=task.climb, method=task.method,
                      world=serial_comm())
    neb.attach_results([images[0], images[-1]])  # endpoints: evaluated once, never move
    return neb


def distinct_images(images: Sequence[Atoms], tolerance_A: float = 1e-3) -> list[Atoms]:
    """The band without the interior images that sit on a neighbour: a climbing image on a band
    that only climbs ends on the endpoint above it, and ASE's spline fit divides by the distance."""
    def apart(a: Atoms, b: Atoms) -> bool:
        vectors, _ = find_mic(a.positions - b.positions, a.cell, a.pbc)
        return bool(np.linalg.norm(vectors) > tolerance_A)

    kept = [images[0]]
    for image in images[1:-1]:
        if apart(image, kept[-1]) and apart(image, images[-1]):
            kept.append(image)
    return [*kept, images[-1]]


def _band_details(energies: np.ndarray, image_max_forces: np.ndarray) -> str:
    return f"max force {image_max_forces.max():.3f} eV/Å, barrier {energies.max() - energies[0]:.3f} eV"


def run(context) -> NEBResult:
    task: NEBTask = context.spec
    resume = context.resume
    neb = build_band(context.atoms, context.prepared.final, task, evaluator_for(context), resume)
    iteration_energies: list[np.ndarray] = []
    iteration_forces: list[np.ndarray] = []
    recorded_band: int | None = None  # the model call whose band was recorded last
    optimizer = make_optimizer(neb, task.optimizer)
    if resume is not None:
        iteration_energies, iteration_forces, calls_before = neb_restart.history(resume)
        neb_restart.restore_optimizer(resume, optimizer)
        neb.model_calls += calls_before
        neb.get_forces()  # the stored band, already recorded: the optimizer's first look is not an iteration
        recorded_band = neb.model_calls
    progress = Progress(log, f"{context.job.name} NEB", task.max_steps, start=optimizer.nsteps, unit="iteration")

    def record() -> None:
        nonlocal recorded_band
        if recorded_band == neb.model_calls:
            return  # the same band as the last record: no new iteration
        recorded_band = neb.model_calls
        iteration_energies.append(np.array(neb.energies, dtype=float))
        iteration_forces.append(neb.image_max_forces.copy())
        progress.update(len(iteration_energies) - 1, _band_details(iteration_energies[-1], iteration_forces[-1]))

    def save() -> None:
        context.writer.checkpoint(neb_restart.capture(neb.images, optimizer, iteration_energies, iteration_forces,
                                                      neb.model_calls, context.writer.frames))

    # Every iteration recorded (record() skips a band it has seen), a checkpoint every
    # checkpoint_every iterations, and the band checkpointed on SIGTERM/SIGINT before stopping.
    optimizer.attach(StepObservers(lambda: optimizer.nsteps, record=record, checkpoint=save,
                                   checkpoint_every=task.checkpoint_every, checkpointed_at=optimizer.nsteps),
                     interval=1)
    with interrupt.deferred():
        optimizer.run(fmax=task.fmax_eV_A, steps=max(0, task.max_steps - optimizer.nsteps))
    converged = neb.converged_to(task.fmax_eV_A)
    record()  # the last evaluated band, when the optimizer stopped between observer calls
    progress.finish(f"({'converged' if converged else 'NOT converged'}; "
                    f"{_band_details(iteration_energies[-1], iteration_forces[-1])})")

    energies = np.array([image.get_potential_energy() for image in neb.images])
    fit = fit_images(distinct_images(neb.images))
    spline_barrier = max(fit.fit_energies)  # ASE's fit is relative to the initial endpoint
    summary = {
        "converged": converged,
        "iterations": len(iteration_energies),
        "model_calls": neb.model_calls,
        "max_force_eV_A": float(iteration_forces[-1].max()),
        "barrier_eV": float(energies.max() - energies[0]),
        "backward_barrier_eV": float(energies.max() - energies[-1]),
        "reaction_energy_eV": float(energies[-1] - energies[0]),
        "barrier_spline_eV": float(spline_barrier),
        # Mirror images of a symmetric band tie up to round-off: the first within SADDLE_TIE_EV.
        "saddle_image": int(np.flatnonzero(energies >= energies.max() - SADDLE_TIE_EV)[0]),
        "n_images": len(neb.images),
    }
    if not converged:
        log.warning("%s: NEB NOT converged after %d steps (max force %.3f eV/Å > %.3f); last path kept",
                    context.job.name, task.max_steps, summary["max_force_eV_A"], task.fmax_eV_A)
    info = context.prepared.info  # this variant's own endpoints: raw and corrected relax them apart
    summary.update({key: info[key] for key in ENDPOINT_SUMMARY_KEYS if key in info})
    reasons = suspect_reasons(energies, neb.images[0], neb.images[-1], info,
                              task.endpoint_max_shift_fraction)
    summary["suspect"], summary["suspect_reasons"] = bool(reasons), reasons
    for reason in reasons:
        log.warning("WARNING: %s: NEB result suspect: %s", context.job.name, reason)
    band_file = context.out_dir / f"{context.job.name}.neb.extxyz"
    write(band_file, neb.images, format="extxyz")
    summary["band_file"] = band_file.name
    return NEBResult(
        **summary,
        iteration_energies_eV=np.array(iteration_energies),
        iteration_max_force_eV_A=np.array(iteration_forces),
        image_energies_eV=energies,
        image_positions_A=np.array([image.positions for image in neb.images]),
        reaction_coordinate_A=np.asarray(fit.path),
        mep_energies_eV=np.asarray(fit.energies),
        spline_coordinate_A=np.asarray(fit.fit_path),
        spline_energies_eV=np.asarray(fit.fit_energies),
    )


class NEBTaskKind(Task[NEBTask, NEBResult]):
    kind = "neb"
    spec = NEBTask
    shares_structures = True
    result = NEBResult

    def resume_state(self, file, spec: NEBTask):
        """The band's newest valid checkpoint (driver.tasks.neb_restart, MD's two sealed slots)."""
        from driver.checkpoint import read_latest

        return read_latest(file)

    def check(self, spec: NEBTask, atoms: Atoms, structure: StructureSpec) -> None:
        """Build the endpoints (cheap, model-free) and check them as the run would use them."""
        super().check(spec, atoms, structure)
        initial, final, info = build_endpoints(atoms, spec)
        for name, endpoint in (("initial", initial), ("final", final)):
            check_min_distance(endpoint, spec.min_distance_A, f"task: the {name} NEB endpoint's")
        hop = info["hop_atom"]
        field = next(name for name in ("vacancy_hop", "interstitial_hop", "final") if getattr(spec, name) is not None)
        note = {"interstitial_hop": ", with task.interstitial_hop's fractions (of the repeated cell) divided by "
                                    "the added repeats",
                "final": ", with the final endpoint file built in the same supercell"}.get(field, "")
        warning = check_hop_well_posed(final.positions[hop] - initial.positions[hop], atoms.cell[:], atoms.pbc,
                                       f"{structure.file}: task.{field}", structure.supercell, note)
        if warning:
            log.warning("warning: %s", warning)
        if info["hop_length_A"] > LONG_HOP_A:  # allowed (a concerted or long-range path), rarely meant
            log.warning("%s: task.%s: warning: the hop is %.2f Å long, more than %g Å: an ion migration hop "
                        "between neighbouring sites is 1.5-4 Å; check the sites (or the final endpoint file)",
                        structure.file, field, info["hop_length_A"], LONG_HOP_A)

    def check_elements(self, spec: NEBTask, potential, atoms: Atoms, structure: StructureSpec) -> None:
        """The initial endpoint, which holds an interstitial hop's extra ion."""
        initial, _, _ = build_endpoints(atoms, spec)
        check_elements(potential, initial, f"{structure.file}: task")

    def prepare(self, atoms: Atoms, spec: NEBTask) -> NEBPrepared:
        return prepare_endpoints(atoms, spec)

    def run(self, context) -> NEBResult:
        return run(context)

    def report_line(self, entry: dict, result: NEBResult) -> str:
        state = "converged" if result.converged else "NOT converged"
        line = (f"  {entry['file']:<24} barrier {result.barrier_eV:.3f} eV (backward "
                f"{result.backward_barrier_eV:.3f} eV), {state} after {result.iterations} iterations, "
                f"max force {result.max_force_eV_A:.3f} eV/Å; band {result.band_file}")
        if result.suspect:
            line += f"; SUSPECT: {'; '.join(result.suspect_reasons)}"
        return line

    def compare_section(self, jobs, options):
        """Barriers of every band and the MEPs overlaid (driver.tasks.neb_compare)."""
        from driver.tasks.neb_compare import compare_section

        return compare_section(jobs, {job.name: read_result(NEBResult, job.path) for job in jobs}, options)

    def comparison_line(self, name: str, raw: NEBResult, corrected: NEBResult, scale: float | None) -> str | None:
        expected = expected_ratio("energy", scale)
        if expected is None or not raw.barrier_eV:
            return None
        ratio = corrected.barrier_eV / raw.barrier_eV
        line = (f"  NEB: corrected/raw barrier = {ratio:.4f} (scalar correction on the same path: "
                f"{EXPECTED_RATIO_TEXT['energy']} = {expected:.4f})")
        raw_name = "raw" + name[len("corrected"):]
        suspect = [job for job, result in ((raw_name, raw), (name, corrected)) if result.suspect]
        if suspect:
            line += f"; SUSPECT band ({', '.join(suspect)}): the ratio may not compare barriers"
        return line


TASK = NEBTaskKind()
