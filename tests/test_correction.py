"""The corrected PES: E' = E0 + (E - E0)/s, F' = F/s, sigma' = sigma/s, and F' = -grad E'."""

from __future__ import annotations

import numpy as np
import pytest

from driver.correction import SofteningCorrection, SofteningScale, read_correction_file
from driver.errors import InputError
from driver.specs import ModelSpec
from tests.conftest import energy_forces_stress

SCALE = 0.8


@pytest.mark.parametrize("fixture", ["chgnet_model", "m3gnet64_model", "mace64_model"])
def test_affine_map_of_raw_results(request, rattled_si, fixture):
    model = request.getfixturevalue(fixture)
    reference_energy = -40.0
    # The raw results of the potential the correction wraps (the stock calculator agrees with it to
    # the family's float tolerance, tests/models/test_batch.py; the map itself is exact).
    raw_energy, raw_forces, raw_stress = energy_forces_stress(model.as_calculator(), rattled_si)
    corrected = SofteningCorrection(model, SCALE, reference_energy).as_calculator()
    energy, forces, stress = energy_forces_stress(corrected, rattled_si)
    assert energy == pytest.approx(reference_energy + (raw_energy - reference_energy) / SCALE, abs=1e-9)
    # Exact up to the rounding of one division in the model's precision (CHGNet: float32).
    rtol = 10 * np.finfo(raw_forces.dtype).eps
    np.testing.assert_allclose(forces, raw_forces / SCALE, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(stress, raw_stress / SCALE, rtol=rtol, atol=1e-12)


def test_reference_structure_keeps_its_energy(m3gnet64_model, rattled_si):
    raw_energy = energy_forces_stress(m3gnet64_model.calculator, rattled_si)[0]
    corrected = SofteningCorrection(m3gnet64_model, SCALE, raw_energy).as_calculator()
    assert energy_forces_stress(corrected, rattled_si)[0] == pytest.approx(raw_energy, abs=1e-12)


@pytest.mark.parametrize("fixture", ["m3gnet64_model", "mace64_model"])
def test_forces_are_minus_finite_difference_gradient(request, rattled_si, fixture):
    """Conservative: F'_ia = -dE'/dr_ia by central differences (float64 models, h = 1e-4 Å)."""
    model = request.getfixturevalue(fixture)
    corrected = SofteningCorrection(model, SCALE, reference_energy_eV=model.energy(rattled_si)).as_calculator()
    _, forces, _ = energy_forces_stress(corrected, rattled_si)
    h = 1e-4
    rng = np.random.default_rng(0)
    for atom in rng.choice(len(rattled_si), size=3, replace=False):
        for axis in range(3):
            energies = []
            for sign in (+1, -1):
                displaced = rattled_si.copy()
                displaced.positions[atom, axis] += sign * h
                energies.append(energy_forces_stress(corrected, displaced)[0])
            numeric = -(energies[0] - energies[1]) / (2 * h)
            assert forces[atom, axis] == pytest.approx(numeric, abs=1e-5), (atom, axis)


def test_scale_must_be_positive(chgnet_model):
    with pytest.raises(InputError):
        SofteningCorrection(chgnet_model, 0.0, 0.0)


def test_correction_file_round_trip(tmp_path):
    path = tmp_path / "correction.yaml"
    path.write_text("softening_scale: 0.74\nmodel:\n  name: chgnet\n  weights_sha256: abc\n")
    scale = read_correction_file(path, ModelSpec(name="chgnet"))
    assert scale.value == 0.74 and scale.source == str(path) and len(scale.file_sha256) == 64
    scale.check_model("abc")
    with pytest.raises(InputError, match="model.weights_sha256: fitted for weights"):
        scale.check_model("def")


def test_inline_scale_has_no_model_check():
    SofteningScale(0.9, "recipe").check_model("anything")


def test_corrected_energy_is_defined_only_for_the_reference_composition(rattled_si):
    """E' = E0 + (E - E0)/s re-references energies at the job's structure: another composition has
    no corrected energy, while the model's own energy is defined for any structure. Tasks ask the
    potential (Potential.energy_is_defined), never the correction's parameters."""
    from ase.calculators.emt import EMT

    from driver.potential import CalculatorPotential

    model = CalculatorPotential(EMT())
    corrected = SofteningCorrection(model, 0.8, -1.0)
    moved, smaller = rattled_si.copy(), rattled_si[:-1]
    moved.rattle(0.1, seed=5)
    assert model.energy_is_defined(smaller, rattled_si)
    assert corrected.energy_is_defined(moved, rattled_si)  # any positions or cell
    assert not corrected.energy_is_defined(smaller, rattled_si)
    # Around another wrapper (the replica gate's view), the answer is the outermost correction's.
    assert not SofteningCorrection(corrected, 0.9, -1.0).energy_is_defined(smaller, rattled_si)
