"""`driver sample`: candidate structures worth labelling with DFT for the softening fit.

The fit weighs force components by the reference force squared, so structures far from
equilibrium (large forces) carry the information about curvature. Candidates come from rattling
the structure and from short high-temperature MD with the raw model; they are ranked by the
model's mean force magnitude, and physically broken ones (atoms too close) are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import write
from ase.neighborlist import neighbor_list

from driver.errors import InputError
from driver.potential import Potential


@dataclass
class Candidate:
    atoms: Atoms
    origin: str  # e.g. "rattle-0.10A-2", "md-1500K-step120"
    mean_force_eV_A: float = 0.0
    max_force_eV_A: float = 0.0
    min_distance_A: float = 0.0


def shortest_distance(atoms: Atoms, search_radius_A: float = 4.0) -> float:
    _, _, distances = neighbor_list("ijd", atoms, search_radius_A)
    return float(distances.min()) if len(distances) else search_radius_A


def rattled(atoms: Atoms, amplitudes_A: Sequence[float], per_amplitude: int, seed: int) -> list[Candidate]:
    """Copies with Gaussian displacements of standard deviation `amplitude` per component."""
    rng = np.random.default_rng(seed)
    found = []
    for amplitude in amplitudes_A:
        for copy in range(per_amplitude):
            candidate = atoms.copy()
            candidate.positions += rng.normal(0.0, amplitude, size=candidate.positions.shape)
            found.append(Candidate(candidate, f"rattle-{amplitude:.2f}A-{copy}"))
    return found


def md_snapshots(atoms: Atoms, calculator, temperature_K: float, steps: int, every: int,
                 timestep_fs: float, seed: int) -> list[Candidate]:
    """Snapshots of a short Langevin run with the raw model (the MD task's own seeded start and
    integrator): thermal, correlated distortions."""
    from driver.tasks.md import MDTask, initialize_velocities, make_integrator

    system = atoms.copy()
    system.calc = calculator
    spec = MDTask(kind="md", ensemble="nvt_langevin", timestep_fs=timestep_fs, steps=steps,
                  temperature_K=temperature_K, friction_per_fs=0.02, seed=seed)
    initialize_velocities(system, temperature_K, seed)
    dynamics = make_integrator(system, spec, temperature_K, seed)
    found: list[Candidate] = []
    for _ in range(steps // every):
        dynamics.run(every)
        snapshot = system.copy()
        snapshot.set_constraint()  # the integrator's FixCom is not part of the structure
        snapshot.calc = None
        found.append(Candidate(snapshot, f"md-{temperature_K:g}K-step{dynamics.nsteps}"))
    return found


def rank(candidates: list[Candidate], potential: Potential, min_distance_A: float) -> list[Candidate]:
    """Score each candidate by the model's mean |F| (all of them through the potential at once:
    batched where that pays, in batches the memory holds); drop those with atoms closer than allowed."""
    kept = []
    for candidate in candidates:
        candidate.min_distance_A = shortest_distance(candidate.atoms)
        if candidate.min_distance_A >= min_distance_A:
            kept.append(candidate)
    results = potential.evaluate([candidate.atoms for candidate in kept], ("energy", "forces"))
    for candidate, result in zip(kept, results, strict=True):
        norms = np.linalg.norm(result.forces, axis=1)
        candidate.mean_force_eV_A, candidate.max_force_eV_A = float(norms.mean()), float(norms.max())
    return sorted(kept, key=lambda c: c.mean_force_eV_A, reverse=True)


def write_candidates(selected: list[Candidate], out_dir: Path) -> tuple[Path, Path]:
    """One extended XYZ with all candidates, and one VASP folder (POSCAR) per candidate."""
    vasp_dir = out_dir / "vasp"
    try:
        vasp_dir.mkdir(parents=True, exist_ok=True)
        frames = []
        for number, candidate in enumerate(selected):
            atoms = candidate.atoms.copy()
            atoms.info.update(origin=candidate.origin, model_mean_force_eV_A=candidate.mean_force_eV_A,
                              model_max_force_eV_A=candidate.max_force_eV_A, min_distance_A=candidate.min_distance_A)
            frames.append(atoms)
            folder = vasp_dir / f"{number:03d}_{candidate.origin}"
            folder.mkdir(exist_ok=True)
            write(folder / "POSCAR", candidate.atoms, format="vasp", direct=True, sort=False)
        xyz = out_dir / "candidates.extxyz"
        write(xyz, frames, format="extxyz")
    except OSError as exc:
        raise InputError(f"{out_dir}: cannot write candidates ({exc.strerror})") from None
    return xyz, vasp_dir


def check_options(amplitudes_A: Sequence[float], md_temperature_K: float | None, timestep_fs: float = 2.0) -> None:
    """Before any model is loaded: bad options fail in a second, not after the load (the MD
    task's own bounds, driver.tasks.md)."""
    from driver.tasks.md import MAX_TEMPERATURE_K, MAX_TIMESTEP_FS

    if any(not 0 < a <= 5 for a in amplitudes_A):
        raise InputError(f"--rattle: amplitudes must be > 0 and <= 5 Å, got {list(amplitudes_A)}")
    if md_temperature_K is not None and not 0 < md_temperature_K <= MAX_TEMPERATURE_K:
        raise InputError(f"--md-temperature: must be > 0 and <= {MAX_TEMPERATURE_K:g} K, got {md_temperature_K:g}")
    if not 0 < timestep_fs <= MAX_TIMESTEP_FS:
        raise InputError(f"--timestep-fs: must be > 0 and <= {MAX_TIMESTEP_FS:g} fs, got {timestep_fs:g}")
    if not amplitudes_A and md_temperature_K is None:
        raise InputError("no candidates: give --rattle amplitudes and/or --md-temperature")


def sample(atoms: Atoms, potential: Potential, *, amplitudes_A: Sequence[float], per_amplitude: int, md_temperature_K: float | None,
           md_steps: int, md_every: int, timestep_fs: float, select: int, min_distance_fraction: float,
           seed: int) -> list[Candidate]:
    check_options(amplitudes_A, md_temperature_K)
    candidates = rattled(atoms, amplitudes_A, per_amplitude, seed)
    if md_temperature_K is not None:
        candidates += md_snapshots(atoms, potential.as_calculator(), md_temperature_K, md_steps, md_every,
                                   timestep_fs, seed)
    # Closer than a fraction of the starting structure's shortest bond: unphysical, a waste of DFT time.
    limit = min_distance_fraction * shortest_distance(atoms)
    ranked = rank(candidates, potential, limit)
    if not ranked:
        raise InputError(f"all {len(candidates)} candidates put atoms closer than {limit:.2f} Å; use smaller "
                         "--rattle amplitudes or a lower --min-distance-fraction")
    return ranked[:select]
