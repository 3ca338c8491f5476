"""task.kind: relax: agreement with ASE driven by hand, the scalar correction's identities (same
minimum, ΔE x 1/s), pressure, symmetry, the structure files, non-convergence, and the shipped recipe."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.io import read
from ase.optimize import BFGS

from driver.cli import main
from tests.conftest import ROOT, emt_recipe

S = 0.8  # emt_recipe's correction


def _run(tmp_path, task, capsys=None) -> tuple[int, dict]:
    out = tmp_path / "out"
    rc = main(["run", str(emt_recipe(tmp_path, task)), "--out", str(out)])
    return rc, {job["job"]: job for job in json.loads((out / "summary.json").read_text())["jobs"]}


def test_cell_relaxation_matches_ase_by_hand_and_the_correction_keeps_the_minimum(tmp_path, emt_family):
    rc, jobs = _run(tmp_path, {"kind": "relax", "cell": True, "optimizer": "bfgs", "fmax_eV_A": 0.001})
    assert rc == 0
    raw, corrected = jobs["raw"], jobs["corrected"]
    assert raw["converged"] and corrected["converged"] and raw["status"] == "completed"
    # ASE by hand, from the same rattled start: the same relaxed cell.
    start = read(tmp_path / "Cu.extxyz")
    start.calc = EMT()
    BFGS(FrechetCellFilter(start), logfile=None).run(fmax=0.001, steps=500)
    assert raw["volume_A3"] == pytest.approx(start.get_volume(), rel=1e-4)
    assert np.abs(start.get_stress() / units.GPa).max() < 0.05
    # The scalar correction divides forces and stresses by s: the same minimum, ΔE x 1/s.
    assert corrected["volume_A3"] == pytest.approx(raw["volume_A3"], rel=1e-4)
    assert corrected["energy_change_eV"] == pytest.approx(raw["energy_change_eV"] / S, rel=1e-3)
    # The files users pass on hold the relaxed structure, and the trajectory ends there.
    out = tmp_path / "out"
    relaxed = {name: read(out / name) for name in raw["structure_files"]}
    assert set(relaxed) == {"raw.relaxed.cif", "raw.relaxed.extxyz", "raw.POSCAR"}
    for atoms in relaxed.values():
        assert atoms.get_volume() == pytest.approx(raw["volume_A3"], rel=1e-5)
    with h5py.File(out / "raw.h5", "r") as f:
        steps = f["particles/all/position/step"][()]
        final = f["particles/all/position/value"][-1]
        assert steps[0] == 0 and steps[-1] == raw["steps"] and len(steps) == raw["steps"] + 1
        np.testing.assert_allclose(final, f["results/relax/positions_A"][()])
        assert f["observables/potential_energy/value"][-1] == pytest.approx(raw["final_energy_eV"])


def test_pressure_compresses_to_the_target_pressure(tmp_path, emt_family):
    rc, jobs = _run(tmp_path, {"kind": "relax", "cell": True, "pressure_GPa": 10.0, "fmax_eV_A": 0.0005,
                               "max_steps": 1000})
    assert rc == 0
    atoms = read(tmp_path / "out" / "raw.relaxed.extxyz")
    atoms.calc = EMT()
    pressure_GPa = -np.trace(atoms.get_stress(voigt=False)) / 3 / units.GPa
    assert pressure_GPa == pytest.approx(10.0, abs=0.1)
    assert jobs["raw"]["volume_change"] < -0.02  # Cu's bulk modulus ~135 GPa: ~ -7% at 10 GPa


def test_symmetry_is_kept(tmp_path, emt_family):
    from ase.spacegroup import get_spacegroup

    structure = tmp_path / "Cu.cif"
    bulk("Cu", "fcc", a=3.7, cubic=True).write(structure)
    recipe = emt_recipe(tmp_path, {"kind": "relax", "cell": True, "symmetry": True, "fmax_eV_A": 0.001},
                        structure={"file": str(structure)})
    assert main(["run", str(recipe), "--out", str(tmp_path / "out")]) == 0
    relaxed = read(tmp_path / "out" / "raw.relaxed.cif")
    assert get_spacegroup(relaxed, symprec=1e-4).no == 225
    assert relaxed.cell.lengths()[0] == pytest.approx(3.59, abs=0.01)  # EMT Cu's lattice constant


def test_not_converged_exits_1_and_keeps_the_last_structure(tmp_path, emt_family, capsys):
    rc, jobs = _run(tmp_path, {"kind": "relax", "fmax_eV_A": 1e-6, "max_steps": 3})
    assert rc == 1
    assert jobs["raw"]["status"] == "not converged" and jobs["raw"]["steps"] == 3
    assert (tmp_path / "out" / "raw.relaxed.cif").is_file()
    assert "NOT converged" in capsys.readouterr().out


def test_pressure_without_the_cell_is_refused(tmp_path, emt_family, capsys):
    recipe = emt_recipe(tmp_path, {"kind": "relax", "pressure_GPa": 1.0})
    assert main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "task.pressure_GPa" in err[0] and "task.cell: true" in err[0]


def test_shipped_recipe_with_chgnet(tmp_path):
    out = tmp_path / "out"
    assert main(["run", str(ROOT / "recipes" / "relax.yaml"), "--out", str(out)]) == 0
    jobs = json.loads((out / "summary.json").read_text())["jobs"]
    raw, corrected = jobs
    assert raw["converged"] and corrected["converged"]
    assert 5.3 < raw["cell_lengths_A"][0] < 5.6 and max(raw["cell_lengths_A"]) - min(raw["cell_lengths_A"]) < 1e-4
    assert corrected["volume_A3"] == pytest.approx(raw["volume_A3"], rel=1e-3)
