"""Equation of state (`task.kind: eos`): energy against volume over a strain range, positions
relaxed at each volume, fitted with ASE's EOS forms; one job per variant.

ASE's EquationOfState gives the fit; scipy's curve_fit on the same ASE function, started there,
gives the parameters' standard errors. Each volume is a restart point (driver.points). For the
scalar softening correction E' = E0 + (E - E0)/s at every volume, so V0 and B' are the raw ones
and B0' = B0/s exactly (up to the positions' relaxation tolerance).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
from ase import Atoms, units
from pydantic import Field

from driver.correction import expected_ratio
from driver.errors import SimulationError
from driver.h5read import reading
from driver.points import PointStore, each_point
from driver.relax import CellRelaxSpec, relax
from driver.results import JobStatus, TaskResult, array, scalar
from driver.schema import Bool, Strict, bounded
from driver.structure import check_periodic
from driver.tasks import Prepared, Task, prerelaxed

if TYPE_CHECKING:
    from driver.specs import StructureSpec

log = logging.getLogger(__name__)

EOSForm = Literal["birchmurnaghan", "murnaghan", "vinet", "pouriertarantola", "birch"]


class EOSTask(Strict):
    """E(V) over +-`strain` linear strain, `n_points` volumes, fitted with an EOS; one job per variant."""

    kind: Literal["eos"]
    strain: bounded(gt=0, le=0.2, warn_above=0.1, why="beyond ~10% the fit leaves the EOS form's range") = Field(
        0.04, description="largest linear strain; volumes span (1 -+ strain)^3 V")
    n_points: bounded(int, ge=5, le=201) = Field(
        9, description="volumes scanned, evenly spaced in linear strain from 1 - strain to 1 + strain")
    eos: EOSForm = Field("birchmurnaghan", description="equation of state fitted to E(V) (ASE's EquationOfState)")
    relax_positions: Bool = Field(True, description="relax the positions at each volume (cell shape fixed)")
    fmax_eV_A: bounded(gt=0, le=100, unit="eV/Å") = Field(
        0.01, description="relax_positions: converged when every force is below this")
    max_steps: bounded(int, ge=1, le=10**7) = Field(
        300, description="relax_positions: FIRE steps at most per volume; unconverged points are reported")
    relax: CellRelaxSpec | None = Field(None, description="relax the cell before the scan (centres it on V0)")


@dataclass
class EOSResult(TaskResult):
    """E(V) and its fit; the ± are the fit's standard errors."""

    kind: ClassVar[str] = "eos"
    V0_A3: float = scalar("Angstrom^3")
    V0_err_A3: float = scalar("Angstrom^3")
    E0_eV: float = scalar("eV")
    E0_err_eV: float = scalar("eV")
    B0_GPa: float = scalar("GPa")
    B0_err_GPa: float = scalar("GPa")
    B0_prime: float = scalar()
    B0_prime_err: float = scalar()
    fit_rms_eV: float = scalar("eV")
    eos: str = scalar()
    n_points: int = scalar()
    V0_inside_scan: bool = scalar()
    unconverged_points: list[int] = scalar()
    V0_per_atom_A3: float = scalar("Angstrom^3")
    volumes_A3: np.ndarray = array("Angstrom^3")
    energies_eV: np.ndarray = array("eV")


def volume_factors(spec: EOSTask) -> np.ndarray:
    return np.linspace(1 - spec.strain, 1 + spec.strain, spec.n_points)


def eos_fit(volumes: np.ndarray, energies: np.ndarray, form: str) -> dict[str, float]:
    """V0, E0, B0, B' and their standard errors: ASE's fit, refined by curve_fit for the covariance."""
    import ase.eos
    from scipy.optimize import curve_fit

    function = getattr(ase.eos, form)
    fitted = ase.eos.EquationOfState(volumes, energies, eos=form)
    try:
        fitted.fit(warn=False)
        params, covariance = curve_fit(function, volumes, energies, p0=fitted.eos_parameters, maxfev=20000,
                                       ftol=1e-14, xtol=1e-14, gtol=1e-14)
    except (RuntimeError, ValueError) as exc:
        raise SimulationError(f"the {form} fit of E(V) failed ({exc}); widen task.strain or add points") from None
    errors = np.sqrt(np.clip(np.diag(covariance), 0, None)) if np.isfinite(covariance).all() else np.full(4, np.nan)
    e0, b0, bp, v0 = params
    residual = energies - function(volumes, *params)
    return {"V0_A3": float(v0), "V0_err_A3": float(errors[3]), "E0_eV": float(e0), "E0_err_eV": float(errors[0]),
            "B0_GPa": float(b0 / units.GPa), "B0_err_GPa": float(errors[1] / units.GPa),
            "B0_prime": float(bp), "B0_prime_err": float(errors[2]),
            "fit_rms_eV": float(np.sqrt(np.mean(residual**2)))}


def run(context) -> EOSResult:
    spec: EOSTask = context.spec
    reference: Atoms = context.atoms
    factors = volume_factors(spec)

    def compute(number: int) -> dict:
        atoms = reference.copy()
        atoms.calc = reference.calc
        atoms.set_cell(reference.cell[:] * factors[number], scale_atoms=True)
        steps, converged = 0, True
        if spec.relax_positions:
            outcome = relax(atoms, spec.fmax_eV_A, spec.max_steps, label=f"{context.job.name}: volume {number + 1}")
            steps, converged = outcome.steps, outcome.converged
        return {"volume_A3": float(atoms.get_volume()), "energy_eV": float(atoms.get_potential_energy()),
                "relax_steps": steps, "relax_converged": converged,
                "positions": atoms.get_positions(), "cell": atoms.cell[:]}

    points = each_point(PointStore(context.writer), [f"eos_{i:03d}" for i in range(len(factors))], compute, log,
                        f"{context.job.name}: EOS",
                        lambda p: f"V {p['volume_A3']:.3f} Å^3  E {p['energy_eV']:.6f} eV")
    volumes = np.array([p["volume_A3"] for p in points])
    energies = np.array([p["energy_eV"] for p in points])
    fit = eos_fit(volumes, energies, spec.eos)
    unconverged = [i + 1 for i, p in enumerate(points) if not p["relax_converged"]]
    if unconverged:
        log.warning("%s: the positions did not converge at volume(s) %s", context.job.name, unconverged)
    inside = volumes.min() <= fit["V0_A3"] <= volumes.max()
    if not inside:
        log.warning("%s: the fitted V0 %.3f Å^3 lies outside the scanned volumes %.3f-%.3f Å^3; relax the cell "
                    "first (task.relax) or widen task.strain", context.job.name, fit["V0_A3"], volumes.min(),
                    volumes.max())
    return EOSResult(**fit, eos=spec.eos, n_points=len(points), V0_inside_scan=bool(inside),
                     unconverged_points=unconverged, V0_per_atom_A3=fit["V0_A3"] / len(reference),
                     volumes_A3=volumes, energies_eV=energies)


def finalize(out_dir, entries: list[dict]) -> None:
    """E(V) with its fit, raw and corrected overlaid: eos.png."""
    import matplotlib

    matplotlib.use("Agg")
    import ase.eos
    import matplotlib.pyplot as plt

    done = [e for e in entries if e["status"] == JobStatus.COMPLETED]
    if not done:
        return
    figure, axes = plt.subplots(figsize=(5, 4))
    for entry in done:
        with reading(out_dir / entry["file"]) as handle:
            volumes, energies = handle["results/eos/volumes_A3"][()], handle["results/eos/energies_eV"][()]
        grid = np.linspace(volumes.min(), volumes.max(), 200)
        curve = getattr(ase.eos, entry["eos"])(grid, entry["E0_eV"], entry["B0_GPa"] * units.GPa, entry["B0_prime"],
                                               entry["V0_A3"])
        line, = axes.plot(grid, curve, label=f"{entry['job']}: B0 {entry['B0_GPa']:.1f} GPa")
        axes.plot(volumes, energies, "o", color=line.get_color())
    axes.set_xlabel("volume (Å³)")
    axes.set_ylabel("energy (eV)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(out_dir / "eos.png", dpi=120)
    plt.close(figure)
    for entry in done:
        entry["plot"] = "eos.png"


class EOSTaskKind(Task[EOSTask, EOSResult]):
    kind = "eos"
    spec = EOSTask
    result = EOSResult

    def check(self, spec: EOSTask, atoms: Atoms, structure: StructureSpec) -> None:
        super().check(spec, atoms, structure)
        check_periodic(atoms, "task.kind: eos needs")

    def needs_stress(self, spec: EOSTask) -> bool:
        return spec.relax is not None and spec.relax.relax_cell

    def prepare(self, atoms: Atoms, spec: EOSTask) -> Prepared:
        return prerelaxed(atoms, spec.relax)

    def run(self, context) -> EOSResult:
        return run(context)

    def report_line(self, entry: dict, result: EOSResult) -> str:
        r = result
        line = (f"  {entry['file']:<24} V0 {r.V0_A3:.3f} ± {r.V0_err_A3:.3f} Å^3, B0 {r.B0_GPa:.2f} ± "
                f"{r.B0_err_GPa:.2f} GPa, B' {r.B0_prime:.2f} ± {r.B0_prime_err:.2f} ({r.eos}, {r.n_points} points)")
        if not r.V0_inside_scan:
            line += "; V0 OUTSIDE the scanned volumes"
        return line + (f"; plot {entry['plot']}" if entry.get("plot") else "")

    def comparison_line(self, name: str, raw: EOSResult, corrected: EOSResult, scale: float | None) -> str | None:
        expected = expected_ratio("modulus", scale)
        if expected is None or not raw.B0_GPa:
            return None
        return (f"  eos: corrected/raw B0 = {corrected.B0_GPa / raw.B0_GPa:.4f} (exact for the scalar "
                f"correction: 1/s = {expected:.4f}); V0 ratio {corrected.V0_A3 / raw.V0_A3:.5f} (exact: 1)")

    def finalize(self, out_dir, entries: list[dict]) -> dict[str, object]:
        finalize(out_dir, entries)
        return {}


TASK = EOSTaskKind()
