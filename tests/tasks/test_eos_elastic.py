"""task.kind: eos and elastic: agreement with ASE's EOS and pymatgen driven by hand, each other
(K_VRH = B0), the exact 1/s identities of the scalar correction, and the shipped recipes."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.eos import EquationOfState
from ase.io import write

from driver.cli import main
from tests.conftest import ROOT, emt_recipe

S = 0.8  # emt_recipe's correction


def _perfect_cu(tmp_path):
    structure = tmp_path / "perfect-Cu.extxyz"  # not emt_recipe's own Cu.extxyz (rattled)
    write(structure, bulk("Cu", "fcc", a=3.59, cubic=True))
    return {"file": str(structure)}


def _jobs(out) -> dict[str, dict]:
    return {job["job"]: job for job in json.loads((out / "summary.json").read_text())["jobs"]}


@pytest.fixture(scope="module")
def cu_eos(tmp_path_factory):
    """Perfect fcc Cu (atoms on symmetry sites: positions need no relaxation, the identity is exact)."""
    from driver.registry import register, unregister
    from tests.models.emt_family import FAMILY

    register(FAMILY)
    tmp_path = tmp_path_factory.mktemp("eos")
    recipe = emt_recipe(tmp_path, {"kind": "eos", "n_points": 9, "strain": 0.03}, structure=_perfect_cu(tmp_path))
    assert main(["run", str(recipe), "--out", str(tmp_path / "out")]) == 0
    yield tmp_path / "out"
    unregister(FAMILY.name)


def test_eos_matches_ase_by_hand(cu_eos):
    raw = _jobs(cu_eos)["raw"]
    with h5py.File(cu_eos / "raw.h5", "r") as f:
        volumes = f["results/eos/volumes_A3"][()]
    atoms = bulk("Cu", "fcc", a=3.59, cubic=True)
    energies = []
    for volume in volumes:
        strained = atoms.copy()
        strained.set_cell(atoms.cell * (volume / atoms.get_volume()) ** (1 / 3), scale_atoms=True)
        strained.calc = EMT()
        energies.append(strained.get_potential_energy())
    v0, e0, b0 = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    assert raw["V0_A3"] == pytest.approx(v0, rel=1e-6)
    assert raw["B0_GPa"] == pytest.approx(b0 / units.GPa, rel=1e-4)
    assert 0 < raw["B0_err_GPa"] < 1 and raw["V0_inside_scan"]
    assert (cu_eos / "eos.png").stat().st_size > 10_000


def test_eos_corrected_b0_is_raw_over_s_and_v0_unchanged(cu_eos):
    jobs = _jobs(cu_eos)
    raw, corrected = jobs["raw"], jobs["corrected"]
    assert corrected["B0_GPa"] == pytest.approx(raw["B0_GPa"] / S, rel=1e-6)
    assert corrected["V0_A3"] == pytest.approx(raw["V0_A3"], rel=1e-8)
    assert corrected["B0_prime"] == pytest.approx(raw["B0_prime"], rel=1e-6)


@pytest.fixture(scope="module")
def cu_elastic(tmp_path_factory):
    from driver.registry import register, unregister
    from tests.models.emt_family import FAMILY

    register(FAMILY)
    tmp_path = tmp_path_factory.mktemp("elastic")
    recipe = emt_recipe(tmp_path, {"kind": "elastic", "relax": {"fmax_eV_A": 1e-4}},
                        structure=_perfect_cu(tmp_path))
    assert main(["run", str(recipe), "--out", str(tmp_path / "out")]) == 0
    yield tmp_path / "out"
    unregister(FAMILY.name)


def test_elastic_matches_pymatgen_by_hand_and_the_eos(cu_elastic, cu_eos):
    from pymatgen.analysis.elasticity import DeformedStructureSet, ElasticTensor, Strain, Stress
    from pymatgen.io.ase import AseAtomsAdaptor

    raw = _jobs(cu_elastic)["raw"]
    with h5py.File(cu_elastic / "raw.h5", "r") as f:
        cell = f["particles/all/box/edges/value"][0]
    atoms = bulk("Cu", "fcc", a=3.59, cubic=True)
    atoms.set_cell(cell, scale_atoms=True)
    atoms.calc = EMT()
    eq = atoms.get_stress(voigt=False) / units.GPa
    strains_used = [-0.01, -0.005, 0.005, 0.01]  # the task's defaults (pymatgen's own shear default is 0.06)
    deformed = DeformedStructureSet(AseAtomsAdaptor.get_structure(atoms), symmetry=False,
                                    norm_strains=strains_used, shear_strains=strains_used)
    strains, stresses = [], []
    for deformation, structure in zip(deformed.deformations, deformed, strict=True):
        strained = AseAtomsAdaptor.get_atoms(structure)
        strained.calc = EMT()
        strains.append(Strain.from_deformation(deformation))
        stresses.append(Stress(strained.get_stress(voigt=False) / units.GPa))
    by_hand = ElasticTensor.from_independent_strains(strains, stresses, eq_stress=Stress(eq))
    np.testing.assert_allclose(raw["C_GPa"], by_hand.voigt, atol=0.05)
    # Cubic symmetry, and the two routes to the bulk modulus agree.
    assert raw["C11_GPa"] > raw["C12_GPa"] > 0 and raw["C44_GPa"] > 0 and raw["mechanically_stable"]
    assert raw["bulk_modulus_vrh_GPa"] == pytest.approx(_jobs(cu_eos)["raw"]["B0_GPa"], rel=0.01)
    assert raw["bulk_modulus_vrh_GPa"] == pytest.approx((raw["C11_GPa"] + 2 * raw["C12_GPa"]) / 3, rel=1e-6)


def test_elastic_corrected_cij_are_raw_over_s(cu_elastic):
    jobs = _jobs(cu_elastic)
    raw, corrected = np.array(jobs["raw"]["C_GPa"]), np.array(jobs["corrected"]["C_GPa"])
    large = np.abs(raw) > 1
    np.testing.assert_allclose(corrected[large], raw[large] / S, rtol=1e-4)
    assert jobs["corrected"]["shear_modulus_vrh_GPa"] == pytest.approx(jobs["raw"]["shear_modulus_vrh_GPa"] / S,
                                                                       rel=1e-4)


def test_a_repeated_or_zero_strain_is_refused(tmp_path, emt_family, capsys):
    recipe = emt_recipe(tmp_path, {"kind": "elastic", "normal_strains": [0.0, 0.01]})
    assert main(["validate", str(recipe)]) == 2
    assert "task.normal_strains" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["eos", "elastic"])
def test_shipped_recipe_with_chgnet(tmp_path, name):
    """The shipped recipe on its own structure, at a small size (fewer points and strains)."""
    import yaml

    recipe = yaml.safe_load((ROOT / "recipes" / f"{name}.yaml").read_text())
    recipe["structure"]["file"] = str(ROOT / "recipes" / recipe["structure"]["file"])
    if name == "eos":
        recipe["task"].update(n_points=5, relax_positions=False)
    else:
        recipe["task"].update(normal_strains=[-0.01, 0.01], shear_strains=[-0.01, 0.01], fmax_eV_A=0.02)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 0
    raw, corrected = json.loads((tmp_path / "out" / "summary.json").read_text())["jobs"]
    modulus = "B0_GPa" if name == "eos" else "bulk_modulus_vrh_GPa"
    assert 60 < raw[modulus] < 110  # Si: PBE ~88 GPa; CHGNet softer
    assert corrected[modulus] / raw[modulus] == pytest.approx(1 / 0.627, rel=0.02)
