"""Every MD ensemble in one table: the ASE integrator that runs it, the integrator's state a
checkpoint must keep, how a temperature schedule moves its target, and whether it moves the cell.

The MD task builds integrators from it (`build`), checkpoints read and restore `state_fields`
(driver.checkpoint), schedules call `set_target` (driver.tasks.md_schedule), and NPT-only rules
(stress, a periodic cell) read `moves_cell`: a new ensemble is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from ase import Atoms, units
from ase.md.md import MolecularDynamics

from driver.errors import SimulationError

if TYPE_CHECKING:
    from driver.tasks.md import MDTask


def _set(owner: object, dotted: str, value: float) -> None:
    """Set `a.b.c` on an integrator; a missing attribute is ASE renaming it under us."""
    *path, name = dotted.split(".")
    for part in path:
        owner = getattr(owner, part)
    if not hasattr(owner, name):
        raise SimulationError(f"{type(owner).__name__} has no attribute {name!r} (renamed in this ASE version?); "
                              "update driver.ensembles.ENSEMBLES")
    setattr(owner, name, value)


def _kT(*dotted: str) -> Callable[[MolecularDynamics, float], None]:
    """Set kT (eV) on the named attributes: ASE's Nose-Hoover and MTK classes keep no setter."""
    def setter(integrator: MolecularDynamics, kelvin: float) -> None:
        for name in dotted:
            _set(integrator, name, units.kB * kelvin)
    return setter


def _bussi_target(integrator: MolecularDynamics, kelvin: float) -> None:
    _set(integrator, "temp", units.kB * kelvin)
    _set(integrator, "target_kinetic_energy", 0.5 * integrator.temp * integrator.ndof)


def _langevin_like_target(integrator: Any, kelvin: float) -> None:
    integrator.set_temperature(temperature_K=kelvin)


def _fix_center_of_mass(atoms: Atoms) -> None:
    from ase.constraints import FixCom

    if not any(isinstance(c, FixCom) for c in atoms.constraints):
        atoms.set_constraint([*atoms.constraints, FixCom()])


Builder = Callable[[Atoms, "MDTask", float, np.random.Generator], MolecularDynamics]


def _nve(atoms: Atoms, task: MDTask, kelvin: float, rng: np.random.Generator) -> MolecularDynamics:
    from ase.md.verlet import VelocityVerlet

    return VelocityVerlet(atoms, timestep=task.timestep_fs * units.fs)


def _langevin(atoms: Atoms, task: MDTask, kelvin: float, rng: np.random.Generator) -> MolecularDynamics:
    from ase.md.langevin import Langevin

    _fix_center_of_mass(atoms)  # fixcm=True biases the NVT distribution; ASE recommends FixCom instead
    return Langevin(atoms, timestep=task.timestep_fs * units.fs, temperature_K=kelvin,
                    friction=task.friction_per_fs / units.fs, fixcm=False, rng=rng)


def _nose_hoover(atoms: Atoms, task: MDTask, kelvin: float, rng: np.random.Generator) -> MolecularDynamics:
    from ase.md.nose_hoover_chain import NoseHooverChainNVT

    return NoseHooverChainNVT(atoms, timestep=task.timestep_fs * units.fs, temperature_K=kelvin,
                              tdamp=task.tdamp_fs * units.fs)


def _bussi(atoms: Atoms, task: MDTask, kelvin: float, rng: np.random.Generator) -> MolecularDynamics:
    from ase.md.bussi import Bussi

    return Bussi(atoms, timestep=task.timestep_fs * units.fs, temperature_K=kelvin, taut=task.tdamp_fs * units.fs,
                 rng=rng)


def _berendsen(atoms: Atoms, task: MDTask, kelvin: float, rng: np.random.Generator) -> MolecularDynamics:
    from ase.md.nptberendsen import NPTBerendsen

    return NPTBerendsen(atoms, timestep=task.timestep_fs * units.fs, temperature_K=kelvin,
                        pressure_au=task.pressure_GPa * units.GPa, taut=task.tdamp_fs * units.fs,
                        taup=task.pdamp_fs * units.fs, compressibility_au=task.compressibility_per_GPa / units.GPa)


def _mtk(atoms: Atoms, task: MDTask, kelvin: float, rng: np.random.Generator) -> MolecularDynamics:
    from ase.md.nose_hoover_chain import IsotropicMTKNPT

    return IsotropicMTKNPT(atoms, timestep=task.timestep_fs * units.fs, temperature_K=kelvin,
                           pressure_au=task.pressure_GPa * units.GPa, tdamp=task.tdamp_fs * units.fs,
                           pdamp=task.pdamp_fs * units.fs)


def _mtk_aniso(atoms: Atoms, task: MDTask, kelvin: float, rng: np.random.Generator) -> MolecularDynamics:
    from ase.md.nose_hoover_chain import MTKNPT

    # All nine cell components move: triclinic cells relax shape as well as volume.
    return MTKNPT(atoms, timestep=task.timestep_fs * units.fs, temperature_K=kelvin,
                  pressure_au=task.pressure_GPa * units.GPa, tdamp=task.tdamp_fs * units.fs,
                  pdamp=task.pdamp_fs * units.fs)


_MTK_TARGET = _kT("_kT", "_thermostat._kT", "_barostat._kT")
_NOSE_HOOVER_STATE = ("_q", "_p", "_thermostat._eta", "_thermostat._p_eta")


@dataclass(frozen=True)
class Ensemble:
    """One `task.ensemble`. `state_fields`: the integrator's attributes (dotted through the objects
    it owns) that change as it runs; constants derived from the recipe (time step, masses,
    damping, target kT) are not state. `set_target`: None where there is no thermostat."""

    name: str
    integrator: str  # the ASE class `build` returns (checkpoints and schedules are checked against it)
    build: Builder
    state_fields: tuple[str, ...]
    set_target: Callable[[MolecularDynamics, float], None] | None
    moves_cell: bool = False


ENSEMBLES: dict[str, Ensemble] = {e.name: e for e in (
    Ensemble("nve", "VelocityVerlet", _nve, (), None),
    # Langevin's v, rnd_pos, rnd_vel are drawn afresh in every step: the RNG is its state.
    Ensemble("nvt_langevin", "Langevin", _langevin, (), _langevin_like_target),
    Ensemble("nvt_nose_hoover", "NoseHooverChainNVT", _nose_hoover, _NOSE_HOOVER_STATE, _kT("_thermostat._kT")),
    Ensemble("nvt_bussi", "Bussi", _bussi, ("transferred_energy",), _bussi_target),
    Ensemble("npt_berendsen", "NPTBerendsen", _berendsen, (), _langevin_like_target, moves_cell=True),
    Ensemble("npt_mtk", "IsotropicMTKNPT", _mtk,
             ("_q", "_p", "_eps", "_p_eps", "_cell0", "_volume0", "_thermostat._eta", "_thermostat._p_eta",
              "_barostat._xi", "_barostat._p_xi"), _MTK_TARGET, moves_cell=True),
    Ensemble("npt_mtk_aniso", "MTKNPT", _mtk_aniso,
             ("_q", "_p", "_h", "_p_g", "_thermostat._eta", "_thermostat._p_eta", "_barostat._xi", "_barostat._p_xi"),
             _MTK_TARGET, moves_cell=True),
)}

EnsembleName = Literal["nve", "nvt_langevin", "nvt_nose_hoover", "nvt_bussi", "npt_berendsen", "npt_mtk",
                       "npt_mtk_aniso"]  # the recipe's choices: the table's keys (tested)


def of_integrator(integrator: MolecularDynamics) -> Ensemble | None:
    """The table's entry for a built integrator (by its ASE class), None for a foreign one."""
    name = type(integrator).__name__
    return next((e for e in ENSEMBLES.values() if e.integrator == name), None)
