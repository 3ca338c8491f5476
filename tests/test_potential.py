"""The Potential contract with a cheap calculator (EMT): typed results, only the properties
asked for, the ASE adapter, and the correction wrapper's exact identities on batches."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT
from ase.md.nose_hoover_chain import NoseHooverChainNVT

from driver.correction import SofteningCorrection, expected_ratio
from driver.potential import PROPERTIES, CalculatorPotential, Results


@pytest.fixture
def structures():
    out = []
    for seed, repeat in ((1, 1), (2, 2)):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeat)
        atoms.rattle(0.05, seed=seed)
        out.append(atoms)
    return out


def test_results_hold_only_what_was_asked(structures):
    potential = CalculatorPotential(EMT())
    energy_only = potential.evaluate(structures, ("energy",))
    assert all(r.forces is None and r.stress is None and isinstance(r.energy, float) for r in energy_only)
    full = potential.evaluate(structures, PROPERTIES)
    assert [r.forces.shape for r in full] == [(4, 3), (32, 3)] and all(r.stress.shape == (6,) for r in full)
    with pytest.raises(PropertyNotImplementedError, match="forces"):
        energy_only[0].require(["forces"])
    with pytest.raises(ValueError, match="unknown properties"):
        potential.evaluate(structures, ("charges",))
    with pytest.raises(PropertyNotImplementedError):  # EMT predicts no magnetic moments
        potential.evaluate(structures, ("energy", "magmoms"))


def test_results_of_library_output_are_float64_voigt():
    result = Results.of(np.float32(-1.5), np.ones((2, 3), dtype=np.float32), np.eye(3))
    assert result.energy == -1.5 and result.forces.dtype == np.float64
    np.testing.assert_array_equal(result.stress, [1, 1, 1, 0, 0, 0])


def test_adapter_equals_the_calculator(structures):
    atoms = structures[1].copy()
    atoms.calc = CalculatorPotential(EMT()).as_calculator()
    reference = structures[1].copy()
    reference.calc = EMT()
    assert atoms.get_potential_energy() == reference.get_potential_energy()
    np.testing.assert_array_equal(atoms.get_forces(), reference.get_forces())
    np.testing.assert_array_equal(atoms.get_stress(), reference.get_stress())
    # ASE's Nose-Hoover and MTK integrators ask for a force-consistent energy.
    assert atoms.get_potential_energy(force_consistent=True) == reference.get_potential_energy()


def test_adapter_runs_nose_hoover(structures):
    atoms = structures[1].copy()
    atoms.calc = CalculatorPotential(EMT()).as_calculator()
    NoseHooverChainNVT(atoms, timestep=1.0, temperature_K=300, tdamp=100.0).run(3)
    assert np.isfinite(atoms.get_positions()).all()


def test_correction_wrapper_identities_on_a_batch(structures):
    """E' = E0 + (E - E0)/s, F' = F/s, sigma' = sigma/s, for every structure of a batch."""
    base = CalculatorPotential(EMT())
    s, e0 = 0.7, 1.25
    raw = base.evaluate(structures, PROPERTIES)
    corrected = SofteningCorrection(base, s, e0).evaluate(structures, PROPERTIES)
    for r, c in zip(raw, corrected, strict=True):
        assert c.energy == pytest.approx(e0 + (r.energy - e0) / s, abs=1e-12)
        np.testing.assert_allclose(c.forces, r.forces / s, rtol=1e-14)
        np.testing.assert_allclose(c.stress, r.stress / s, rtol=1e-14)
    energy_only = SofteningCorrection(base, s, e0).evaluate(structures, ("energy",))
    assert energy_only[0].forces is None


def test_wrappers_compose(structures):
    """A correction of a correction is the product of the scales (about the same E0)."""
    base = CalculatorPotential(EMT())
    twice = SofteningCorrection(SofteningCorrection(base, 0.5, 0.0), 0.8, 0.0)
    once = SofteningCorrection(base, 0.4, 0.0)
    a, b = twice.evaluate(structures), once.evaluate(structures)
    np.testing.assert_allclose(a[1].forces, b[1].forces, rtol=1e-14)
    assert twice.provenance()["softening_scale"] == 0.8


def test_expected_ratios_of_the_scalar_map():
    assert expected_ratio("energy", 0.64) == pytest.approx(1 / 0.64)
    assert expected_ratio("frequency", 0.64) == pytest.approx(1.25)
    assert expected_ratio("displacement", 0.64) == pytest.approx(0.8)
    assert expected_ratio("energy", None) is None
