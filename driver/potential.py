"""The one contract between models, corrections and tasks: a Potential.

`Potential.evaluate(structures, properties)` turns many structures into typed `Results` at once
(energy, and forces or stress only when asked), batched where the model's library batches and
one by one otherwise. `as_calculator()` adapts any Potential to ASE's `Calculator`, for what ASE
drives (integrators, optimizers, NEB, filters). Wrappers (the softening correction, a batching
gate) are Potentials around Potentials, so a task holds "the job's potential" and never knows
whether it is raw, corrected or fine-tuned (ASE's `SumCalculator` and TorchSim's `SumModel`
compose the same way).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from driver.errors import InputError

Property = Literal["energy", "forces", "stress", "magmoms"]
PROPERTIES: tuple[Property, ...] = ("energy", "forces", "stress")  # what every family computes
ALL_PROPERTIES: tuple[Property, ...] = (*PROPERTIES, "magmoms")  # magmoms: CHGNet's, on request only
ENERGY_FORCES: tuple[Property, ...] = ("energy", "forces")
Batching = bool | Literal["auto"]


@dataclass(frozen=True)
class Results:
    """One structure's results in ASE's units and conventions: energy eV, forces (n, 3) eV/Å,
    stress the Voigt 6-vector (xx yy zz yz xz xy) in eV/Å³ with ASE's sign. Properties that were
    not asked for are None; magnetic moments (n,) in Bohr magnetons where the model predicts them."""

    energy: float
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    magmoms: np.ndarray | None = None

    @classmethod
    def of(cls, energy, forces=None, stress=None, magmoms=None) -> Results:
        """From whatever a library returns (tensors' numpy views, 3x3 stresses, float32)."""
        if stress is not None:
            stress = np.asarray(stress, dtype=np.float64)
            stress = (full_3x3_to_voigt_6_stress(stress) if stress.shape == (3, 3) else stress).reshape(6)
        if forces is not None:
            forces = np.array(forces, dtype=np.float64).reshape(-1, 3)
        if magmoms is not None:
            magmoms = np.array(magmoms, dtype=np.float64).reshape(-1)
        return cls(float(np.asarray(energy).reshape(())), forces, stress, magmoms)

    def require(self, properties: Iterable[Property]) -> Results:
        missing = [p for p in properties if getattr(self, p) is None]
        if missing:
            raise PropertyNotImplementedError(f"{', '.join(missing)} not computed")
        return self


def check_properties(properties: Iterable[str]) -> tuple[Property, ...]:
    wanted = tuple(dict.fromkeys(properties))
    unknown = [p for p in wanted if p not in ALL_PROPERTIES]
    if unknown:
        raise ValueError(f"unknown properties {unknown}; a Potential computes {ALL_PROPERTIES}")
    return wanted  # type: ignore[return-value]


class Potential(ABC):
    """Energies, forces and stresses of many structures per call (see the module docstring)."""

    #: where the model runs ("cpu", "cuda:0"); wrappers report their base's
    device: str = "cpu"

    @abstractmethod
    def evaluate(self, structures: Sequence[Atoms], properties: Iterable[Property] = ENERGY_FORCES, *,
                 batched: Batching = "auto", batch_size: int | None = None) -> list[Results]:
        """Results for each structure, in order. `batched`: many structures per model call (True),
        one at a time (False), or whichever the potential measured or knows to be faster
        ("auto"); `batch_size` caps the structures per call (None: all at once)."""

    def as_calculator(self) -> PotentialCalculator:
        return PotentialCalculator(self)

    def energy(self, atoms: Atoms) -> float:
        return self.evaluate([atoms], ("energy",), batched=False)[0].energy

    def provenance(self) -> dict[str, object]:
        """What a result must record about this potential (model, weights, correction)."""
        return {}

    def unsupported_elements(self, atoms: Atoms) -> list[str]:
        """Elements of `atoms` this potential has no parameters for (a model's element table);
        empty when it takes them all, or does not say."""
        return []

    def energy_is_defined(self, atoms: Atoms, reference: Atoms) -> bool:
        """Whether this potential's energy of `atoms` can be compared with its energy of the job's
        `reference` structure. A model's always can; a wrapper that re-references energies (the
        softening correction) says when it cannot, so a task asks this instead of reading the
        wrapper's parameters."""
        return True


def check_elements(potential: Potential, atoms: Atoms, where: str) -> None:
    """Refuse, before it is evaluated, a structure with an element the model has no parameters
    for; `where` starts the message (the file, and the frame or field)."""
    missing = potential.unsupported_elements(atoms)
    if missing:
        about = potential.provenance()
        model = f"{about.get('model_family', 'the model')} ({about.get('model_source', 'its weights')})"
        raise InputError(f"{where}: {', '.join(missing)} not in the element table of {model}; "
                         "choose a model trained on these elements")


class PotentialCalculator(Calculator):
    """Any Potential as an ASE calculator. Energy and forces are computed together (every ASE
    driver asks for both); stress only when asked. `free_energy` is the energy: no uMLIP models
    electronic entropy, and ASE's Nosé–Hoover and MTK integrators ask for it."""

    implemented_properties = ["energy", "free_energy", "forces", "stress", "magmoms"]

    def __init__(self, potential: Potential):
        super().__init__()
        self.potential = potential

    def calculate(self, atoms: Atoms | None = None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        wanted: list[Property] = ["energy", "forces"]
        wanted += [name for name in ("stress", "magmoms") if name in properties]
        result = self.potential.evaluate([self.atoms], wanted, batched=False)[0].require(wanted)
        self.results = {"energy": result.energy, "free_energy": result.energy, "forces": result.forces}
        for name in ("stress", "magmoms"):
            if getattr(result, name) is not None:
                self.results[name] = getattr(result, name)


class CalculatorPotential(Potential):
    """An ASE calculator (EMT, a library's own uMLIP calculator) as a Potential, one structure at
    a time. Model families add their library's batching on top (driver.models.ModelPotential)."""

    def __init__(self, calculator: Calculator, device: str = "cpu"):
        self.calculator = calculator
        self.device = device

    def evaluate_one(self, atoms: Atoms, properties: tuple[Property, ...]) -> Results:
        """Through the calculator; `atoms` is not modified (ASE calculators keep a copy)."""
        calc = self.calculator
        return Results.of(
            calc.get_potential_energy(atoms),
            calc.get_forces(atoms) if "forces" in properties else None,
            calc.get_stress(atoms) if "stress" in properties else None,
            calc.get_magnetic_moments(atoms) if "magmoms" in properties else None,
        )

    def evaluate(self, structures, properties=ENERGY_FORCES, *, batched="auto", batch_size=None):
        wanted = check_properties(properties)
        return [self.evaluate_one(atoms, wanted) for atoms in structures]
