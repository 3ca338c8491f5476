"""MD checkpoints name each ensemble's integrator state (driver.ensembles.ENSEMBLES): a field ASE
renames is an error, and a new field that changes as the integrator runs fails here."""

from __future__ import annotations

import dataclasses
from typing import get_args

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from driver.checkpoint import CheckpointError, capture, restore_integrator
from driver.ensembles import ENSEMBLES, EnsembleName, of_integrator
from driver.tasks.md import MDTask, initialize_velocities, make_integrator


def test_the_recipe_offers_exactly_the_table_s_ensembles():
    assert set(get_args(EnsembleName)) == set(ENSEMBLES)


def _integrator(ensemble: str):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=0)
    atoms.calc = EMT()
    initialize_velocities(atoms, 300, 0)
    spec = MDTask(kind="md", ensemble=ensemble, timestep_fs=2.0, steps=5, temperature_K=300)
    return atoms, make_integrator(atoms, spec, 300, 0)


def _float_state(obj, prefix="", depth=0) -> dict[str, np.ndarray]:
    """Every float and float array the integrator (and the ASE md objects it owns) holds."""
    found = {}
    for name, value in vars(obj).items():
        if isinstance(value, float) or (isinstance(value, np.ndarray) and value.dtype.kind == "f"):
            found[prefix + name] = np.array(value)
        elif depth < 2 and type(value).__module__.startswith("ase.md."):
            found.update(_float_state(value, f"{prefix}{name}.", depth + 1))
    return found


@pytest.mark.parametrize("ensemble", list(ENSEMBLES))
def test_named_fields_exist_and_cover_what_changes(ensemble):
    atoms, integrator = _integrator(ensemble)
    assert of_integrator(integrator) is ENSEMBLES[ensemble]  # built as the table says
    cell = atoms.cell[:].copy()
    before = _float_state(integrator)  # built, not yet stepped: what a resumed run rebuilds
    capture(atoms, integrator, 0)  # every named field readable
    integrator.run(3)
    after = _float_state(integrator)
    assert ENSEMBLES[ensemble].moves_cell == (not np.array_equal(atoms.cell[:], cell))  # what NPT rules read
    changed = {k for k in before if k in after and not np.array_equal(before[k], after[k])}
    named = set(ENSEMBLES[ensemble].state_fields)
    assert changed <= named, f"state that changes but is not checkpointed: {sorted(changed - named)}"
    assert named <= set(before), f"named fields a fresh {type(integrator).__name__} lacks: {sorted(named - set(before))}"


def test_a_renamed_field_is_an_error_not_a_silent_skip(monkeypatch):
    atoms, integrator = _integrator("nvt_bussi")
    renamed = dataclasses.replace(ENSEMBLES["nvt_bussi"], state_fields=("transferred_energy", "renamed_in_a_later_ase"))
    monkeypatch.setitem(ENSEMBLES, "nvt_bussi", renamed)
    with pytest.raises(CheckpointError, match="renamed_in_a_later_ase"):
        capture(atoms, integrator, 0)


def test_restore_refuses_a_checkpoint_of_other_fields():
    atoms, integrator = _integrator("nvt_nose_hoover")
    state = capture(atoms, integrator, 0)
    state.integrator.pop("_thermostat._eta")
    with pytest.raises(CheckpointError, match="needs"):
        restore_integrator(state, integrator)
