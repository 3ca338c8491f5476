"""Elastic constants (`task.kind: elastic`) from strained cells with relaxed ions, through
pymatgen's elasticity module; one job per variant.

pymatgen makes the deformations (DeformedStructureSet), fits the stress-strain relation
(ElasticTensor.from_independent_strains, stresses relative to the unstrained cell's) and averages
the tensor (Voigt-Reuss-Hill); the driver only relaxes the ions and evaluates the stress of each
strained cell, each a restart point (driver.points). Stresses are ASE's (tension positive), in GPa,
which is the sign pymatgen's fit expects. For the scalar softening correction every stress is
divided by s, so C_ij' = C_ij / s exactly (up to the ions' relaxation tolerance).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
from ase import Atoms, units
from pydantic import Field, field_validator

from driver.correction import expected_ratio
from driver.errors import SimulationError
from driver.points import PointStore, each_point
from driver.relax import CellRelaxSpec, relax
from driver.results import TaskResult, array, scalar
from driver.schema import Bool, Strict, bounded
from driver.structure import check_periodic
from driver.tasks import Prepared, Task, prerelaxed

if TYPE_CHECKING:
    from driver.specs import StructureSpec

log = logging.getLogger(__name__)

Strain = bounded(ge=-0.1, le=0.1)


class ElasticTask(Strict):
    """The elastic tensor from strained cells (ions relaxed); one job per variant."""

    kind: Literal["elastic"]
    normal_strains: list[Strain] = Field([-0.01, -0.005, 0.005, 0.01], description="strains along each axis")
    shear_strains: list[Strain] = Field([-0.01, -0.005, 0.005, 0.01], description="shear deformations")
    relax_ions: Bool = Field(True, description="relax the ions in each strained cell (the relaxed-ion tensor)")
    fmax_eV_A: bounded(gt=0, le=100, unit="eV/Å") = Field(
        0.005, description="relax_ions: converged when every force is below this")
    max_steps: bounded(int, ge=1, le=10**7) = Field(
        300, description="relax_ions: FIRE steps at most per strained cell; unconverged points are reported")
    relax: CellRelaxSpec | None = Field(CellRelaxSpec(fmax_eV_A=0.001),
                                        description="relax the cell first (a stress-free reference); null: as given")

    @field_validator("normal_strains", "shear_strains")
    @classmethod
    def _strains(cls, values: list[float]) -> list[float]:
        if not values or any(value == 0 for value in values):
            raise ValueError(f"must list non-zero strains, got {values}")
        if len(set(values)) != len(values):
            raise ValueError(f"strains repeat: {values}")
        return values


@dataclass
class ElasticResult(TaskResult):
    """The elastic tensor (Voigt, GPa) from pymatgen's stress-strain fit, and its moduli."""

    kind: ClassVar[str] = "elastic"
    C_GPa: list[list[float]] = scalar("GPa")
    C11_GPa: float = scalar("GPa")
    C12_GPa: float = scalar("GPa")
    C44_GPa: float = scalar("GPa")
    bulk_modulus_vrh_GPa: float = scalar("GPa")
    shear_modulus_vrh_GPa: float = scalar("GPa")
    bulk_modulus_voigt_GPa: float = scalar("GPa")
    bulk_modulus_reuss_GPa: float = scalar("GPa")
    shear_modulus_voigt_GPa: float = scalar("GPa")
    shear_modulus_reuss_GPa: float = scalar("GPa")
    youngs_modulus_GPa: float = scalar("GPa")
    poisson_ratio: float = scalar()
    mechanically_stable: bool = scalar()
    n_strained_cells: int = scalar()
    unconverged_points: list[int] = scalar()
    residual_stress_GPa: float = scalar("GPa")
    elastic_tensor_GPa: np.ndarray = array("GPa")
    strains: np.ndarray = array("1")
    stresses_GPa: np.ndarray = array("GPa")
    reference_stress_GPa: np.ndarray = array("GPa")


def deformations(atoms: Atoms, spec: ElasticTask):
    """pymatgen's deformation set of the reference cell (no symmetry reduction: every strain state)."""
    from pymatgen.analysis.elasticity import DeformedStructureSet
    from pymatgen.io.ase import AseAtomsAdaptor

    return DeformedStructureSet(AseAtomsAdaptor.get_structure(atoms), symmetry=False,
                                norm_strains=spec.normal_strains, shear_strains=spec.shear_strains).deformations


def stress_GPa(atoms: Atoms) -> np.ndarray:
    return atoms.get_stress(voigt=False) / units.GPa


def run(context) -> ElasticResult:
    from pymatgen.analysis.elasticity import ElasticTensor
    from pymatgen.analysis.elasticity import Strain as PmgStrain
    from pymatgen.analysis.elasticity import Stress as PmgStress

    spec: ElasticTask = context.spec
    reference: Atoms = context.atoms
    eq_stress = stress_GPa(reference)
    deformation_list = deformations(reference, spec)

    def compute(number: int) -> dict:
        atoms = reference.copy()
        atoms.calc = reference.calc
        gradient = np.asarray(deformation_list[number])
        atoms.set_cell(reference.cell[:] @ gradient.T, scale_atoms=True)
        steps, converged = 0, True
        if spec.relax_ions and len(atoms) > 1:
            outcome = relax(atoms, spec.fmax_eV_A, spec.max_steps, label=f"{context.job.name}: strain {number + 1}")
            steps, converged = outcome.steps, outcome.converged
        return {"deformation": gradient, "stress_GPa": stress_GPa(atoms), "relax_steps": steps,
                "relax_converged": converged}

    points = each_point(PointStore(context.writer), [f"strain_{i:03d}" for i in range(len(deformation_list))],
                        compute, log, f"{context.job.name}: strained cells",
                        lambda p: f"stress {np.abs(p['stress_GPa']).max():.3f} GPa")
    strains = [PmgStrain.from_deformation(p["deformation"]) for p in points]
    stresses = [PmgStress(p["stress_GPa"]) for p in points]
    try:
        tensor = ElasticTensor.from_independent_strains(strains, stresses, eq_stress=PmgStress(eq_stress))
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise SimulationError(f"the stress-strain fit failed ({exc})") from None
    voigt = np.asarray(tensor.voigt)
    eigenvalues = np.linalg.eigvalsh((voigt + voigt.T) / 2)
    stable = bool(eigenvalues.min() > 0)
    if not stable:
        log.warning("%s: the elastic tensor is not positive definite (smallest eigenvalue %.2f GPa): the structure "
                    "is mechanically unstable on this potential", context.job.name, eigenvalues.min())
    unconverged = [i + 1 for i, p in enumerate(points) if not p["relax_converged"]]
    if unconverged:
        log.warning("%s: the ions did not converge in strained cell(s) %s", context.job.name, unconverged)
    return ElasticResult(
        C_GPa=voigt.round(4).tolist(), C11_GPa=float(voigt[0, 0]), C12_GPa=float(voigt[0, 1]),
        C44_GPa=float(voigt[3, 3]), bulk_modulus_vrh_GPa=float(tensor.k_vrh), shear_modulus_vrh_GPa=float(tensor.g_vrh),
        bulk_modulus_voigt_GPa=float(tensor.k_voigt), bulk_modulus_reuss_GPa=float(tensor.k_reuss),
        shear_modulus_voigt_GPa=float(tensor.g_voigt), shear_modulus_reuss_GPa=float(tensor.g_reuss),
        youngs_modulus_GPa=float(tensor.y_mod / 1e9), poisson_ratio=float(tensor.homogeneous_poisson),
        mechanically_stable=stable, n_strained_cells=len(points), unconverged_points=unconverged,
        residual_stress_GPa=float(np.abs(eq_stress).max()), elastic_tensor_GPa=voigt,
        strains=np.array([np.asarray(s) for s in strains]), stresses_GPa=np.array([p["stress_GPa"] for p in points]),
        reference_stress_GPa=eq_stress)


class ElasticTaskKind(Task[ElasticTask, ElasticResult]):
    kind = "elastic"
    spec = ElasticTask
    result = ElasticResult

    def check(self, spec: ElasticTask, atoms: Atoms, structure: StructureSpec) -> None:
        super().check(spec, atoms, structure)
        check_periodic(atoms, "task.kind: elastic needs")

    def needs_stress(self, spec: ElasticTask) -> bool:
        return True

    def prepare(self, atoms: Atoms, spec: ElasticTask) -> Prepared:
        return prerelaxed(atoms, spec.relax)

    def run(self, context) -> ElasticResult:
        return run(context)

    def report_line(self, entry: dict, result: ElasticResult) -> str:
        line = (f"  {entry['file']:<24} C11 {result.C11_GPa:.1f}, C12 {result.C12_GPa:.1f}, C44 "
                f"{result.C44_GPa:.1f} GPa; K_VRH {result.bulk_modulus_vrh_GPa:.1f}, G_VRH "
                f"{result.shear_modulus_vrh_GPa:.1f} GPa")
        return line + ("" if result.mechanically_stable else "; MECHANICALLY UNSTABLE")

    def comparison_line(self, name: str, raw: ElasticResult, corrected: ElasticResult,
                        scale: float | None) -> str | None:
        expected = expected_ratio("modulus", scale)
        if expected is None or not raw.bulk_modulus_vrh_GPa:
            return None
        raw_c = np.asarray(raw.C_GPa)
        ratio = np.asarray(corrected.C_GPa) / np.where(np.abs(raw_c) > 1, raw_c, np.nan)
        ratio = ratio[np.isfinite(ratio)]
        return (f"  elastic: corrected/raw C_ij = {ratio.min():.4f}-{ratio.max():.4f}, K_VRH "
                f"{corrected.bulk_modulus_vrh_GPa / raw.bulk_modulus_vrh_GPa:.4f} "
                f"(exact for the scalar correction: 1/s = {expected:.4f})")


TASK = ElasticTaskKind()
