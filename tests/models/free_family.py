"""Lithium that feels nothing in a host held by springs: a model with a known diffusivity.

Li atoms get zero force, so under Langevin dynamics each moves as a free Brownian particle with
D = kT/(mγ) exactly (less the 1/N of the centre of mass the integrator holds fixed); every other
atom is tied to its starting position by a spring, a host lattice that never melts and never
moves. Registered by the diffusion tests (driver.registry.register)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from driver.registry import ModelFamily

SPRING_EV_A2 = 5.0
FREE_Z = 3


class FreeLithium(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        host = self.atoms.numbers != FREE_Z
        if getattr(self, "anchors", None) is None or len(self.anchors) != len(self.atoms):
            self.anchors = self.atoms.get_positions()
        displacement = self.atoms.get_positions() - self.anchors
        forces = np.zeros((len(self.atoms), 3))
        forces[host] = -SPRING_EV_A2 * displacement[host]
        self.results = {"energy": 0.5 * SPRING_EV_A2 * float(np.sum(displacement[host] ** 2)), "forces": forces}


def load(spec, device: str, models_dirs: list[Path]):
    from driver.models import LoadedWeights

    return LoadedWeights(FreeLithium(), "free-lithium", None)


FAMILY = ModelFamily(
    name="free_li",
    package="ase",
    dtypes=("float64",),
    description="free Li in a spring-held host (tests only)",
    load=load,
    distributions=("ase",),
)
