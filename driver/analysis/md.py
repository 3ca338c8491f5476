"""Per-job MD analysis: MSD and D per species, Nernst-Einstein σ, RDF, temperature/energy traces."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols

from driver.analysis.diffusion import (
    DiffusionFit,
    diffusivity,
    nernst_einstein,
    remove_drift,
    unwrap,
)
from driver.analysis.rdf import rdf
from driver.trajectory import Trajectory, read_trajectory


@dataclass
class SpeciesDiffusion:
    symbol: str
    count: int
    msd_A2: np.ndarray
    fit: DiffusionFit
    charge_e: float
    conductivity_S_cm: float | None  # None where the charge is 0 (no ionic current to speak of)


@dataclass
class MDAnalysis:
    job: str
    variant: str
    temperature_K: float | None
    softening_scale: float | None
    mean_temperature_K: float
    volume_A3: float
    times_fs: np.ndarray
    species: dict[str, SpeciesDiffusion]
    rdf: tuple[np.ndarray, np.ndarray] | None
    traces: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def default_charges(symbols: list[str]) -> dict[str, float]:
    """Charge-balanced oxidation states of the composition (pymatgen's guesses, most likely first);
    where there is none, each element's first common oxidation state, and 0 for an elemental solid."""
    from pymatgen.core import Composition, Element

    unique = sorted(set(symbols))
    if len(unique) == 1:
        return {unique[0]: 0.0}
    composition = Composition({s: symbols.count(s) for s in unique}).reduced_composition
    try:
        guesses = composition.oxi_state_guesses()
    except Exception:  # pymatgen's guesser gives up on odd compositions; fall back below
        guesses = ()
    if guesses:
        return {s: float(guesses[0].get(s, 0.0)) for s in unique}
    return {s: float((Element(s).common_oxidation_states or (0,))[0]) for s in unique}


def _rdf_frames(trajectory: Trajectory, max_frames: int = 10) -> list:
    """The second half of the run (after equilibration), at most `max_frames` frames of it."""
    start = len(trajectory.times_fs) // 2
    indices = np.unique(np.linspace(start, len(trajectory.times_fs) - 1, max_frames).astype(int))
    return [trajectory.frame(i) for i in indices]


def analyze_md(path: Path, job: str, variant: str, temperature_K: float | None, softening_scale: float | None,
               charges: dict[str, float], window: tuple[float, float]) -> MDAnalysis:
    trajectory = read_trajectory(path)
    notes: list[str] = []
    positions = unwrap(trajectory.positions_A, trajectory.cells_A)
    positions = remove_drift(positions, trajectory.masses)
    volume = float(np.mean(np.abs(np.linalg.det(trajectory.cells_A))))
    temperatures = trajectory.observables.get("temperature")
    mean_t = float(np.mean(temperatures[1])) if temperatures is not None else float("nan")
    nernst_t = temperature_K if temperature_K else mean_t
    species: dict[str, SpeciesDiffusion] = {}
    for number in sorted(set(trajectory.numbers.tolist())):
        symbol = chemical_symbols[number]
        mask = trajectory.numbers == number
        msd, fit = diffusivity(trajectory.times_fs, positions[:, mask], window)
        charge = charges.get(symbol, 0.0)
        sigma = (nernst_einstein(fit.diffusivity_cm2_s, int(mask.sum()), volume, charge, nernst_t)
                 if charge and math.isfinite(nernst_t) else None)
        species[symbol] = SpeciesDiffusion(symbol, int(mask.sum()), msd, fit, charge, sigma)
    if len(trajectory.times_fs) < 10:
        notes.append(f"{job}: only {len(trajectory.times_fs)} frames; D is a vibrational, not diffusive, estimate")
    try:
        radial = rdf(_rdf_frames(trajectory)) if trajectory.pbc.all() else None
    except Exception as exc:  # ASE raises for cells too small or without volume; the rest still stands
        radial = None
        notes.append(f"{job}: no RDF ({type(exc).__name__})")
    traces = {name: trajectory.observables[name] for name in ("temperature", "potential_energy", "total_energy")
              if name in trajectory.observables}
    return MDAnalysis(job, variant, temperature_K, softening_scale, mean_t, volume,
                      trajectory.times_fs - trajectory.times_fs[0], species, radial, traces, notes)
