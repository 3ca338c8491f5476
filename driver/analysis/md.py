"""Per-job MD analysis: D per species through the product's one estimator
(driver.analysis.diffusivity: window, interval and gates), Nernst-Einstein σ, RDF, traces."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols

from driver.analysis.arrhenius import nernst_einstein_S_cm
from driver.analysis.diffusivity import DiffusionEstimate, estimate_diffusion
from driver.analysis.rdf import rdf
from driver.trajectory import Trajectory, read_trajectory


@dataclass
class SpeciesDiffusion:
    symbol: str
    count: int
    estimate: DiffusionEstimate
    charge_e: float
    conductivity_S_cm: tuple[float, float, float] | None  # (low, median, high); None: no charge, or no D


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
               charges: dict[str, float], confidence: float = 0.95) -> MDAnalysis:
    trajectory = read_trajectory(path)
    notes: list[str] = []
    volume = float(np.mean(np.abs(np.linalg.det(trajectory.cells_A))))
    temperatures = trajectory.observables.get("temperature")
    mean_t = float(np.mean(temperatures[1])) if temperatures is not None else float("nan")
    nernst_t = temperature_K if temperature_K else mean_t
    energy = trajectory.observables.get("potential_energy")
    species: dict[str, SpeciesDiffusion] = {}
    for number in sorted(set(trajectory.numbers.tolist())):
        symbol = chemical_symbols[number]
        mask = trajectory.numbers == number
        estimate = estimate_diffusion(trajectory.times_fs, trajectory.positions_A, trajectory.cells_A, mask,
                                      energy=energy[1] if energy is not None else None, confidence=confidence)
        charge = charges.get(symbol, 0.0)
        sigma = None
        if charge and math.isfinite(nernst_t) and estimate.usable:
            low, high = estimate.interval_cm2_s
            sigma = tuple(float(nernst_einstein_S_cm(d, int(mask.sum()), volume, charge, nernst_t))
                          for d in (low, estimate.diffusivity_cm2_s, high))
        species[symbol] = SpeciesDiffusion(symbol, int(mask.sum()), estimate, charge, sigma)
    try:
        radial = rdf(_rdf_frames(trajectory)) if trajectory.pbc.all() else None
    except Exception as exc:  # ASE raises for cells too small or without volume; the rest still stands
        radial = None
        notes.append(f"{job}: no RDF ({type(exc).__name__})")
    traces = {name: trajectory.observables[name] for name in ("temperature", "potential_energy", "total_energy")
              if name in trajectory.observables}
    return MDAnalysis(job, variant, temperature_K, softening_scale, mean_t, volume,
                      trajectory.times_fs - trajectory.times_fs[0], species, radial, traces, notes)
