"""MD physics through the driver's own task code, on real models in float64."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
from ase.build import bulk
from ase.geometry import find_mic

from driver.cli import main
from driver.correction import SofteningCorrection
from driver.output import H5MDWriter
from driver.tasks.md import MDTask, initialize_velocities, run_md
from tests.conftest import write_recipe

SCALE = 0.7


def _si16():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.03, seed=5)
    return atoms


def _trajectory(atoms, calculator, task: MDTask, path) -> np.ndarray:
    atoms.calc = calculator
    writer = H5MDWriter(path, atoms, provenance={}, flush_every=50)
    run_md(atoms, task, task.temperatures_K[0], writer, write_every=1)
    writer.close("completed")
    with h5py.File(path, "r") as handle:
        return handle["particles/all/position/value"][:]


def test_corrected_nve_reproduces_rescaled_raw_nve(m3gnet64_model, tmp_path):
    """DESIGN.md identity: NVE on E' from (v, dt) equals NVE on E from (sqrt(s) v, dt/sqrt(s)),
    frame by frame, because E' - E0 = (E - E0)/s only rescales time by sqrt(s)."""
    calculator = m3gnet64_model.calculator
    steps, dt = 60, 1.0
    corrected_atoms = _si16()
    initialize_velocities(corrected_atoms, 800, seed=11)
    raw_atoms = corrected_atoms.copy()
    raw_atoms.set_velocities(corrected_atoms.get_velocities() * math.sqrt(SCALE))

    corrected = SofteningCorrection(m3gnet64_model, SCALE, reference_energy_eV=-80.0).as_calculator()
    task = MDTask(kind="md", ensemble="nve", timestep_fs=dt, steps=steps, temperature_K=800)
    raw_task = MDTask(kind="md", ensemble="nve", timestep_fs=dt / math.sqrt(SCALE), steps=steps, temperature_K=800)
    corrected_path = _trajectory(corrected_atoms, corrected, task, tmp_path / "corrected.h5")
    raw_path = _trajectory(raw_atoms, calculator, raw_task, tmp_path / "raw.h5")

    assert corrected_path.shape == raw_path.shape == (steps + 1, 16, 3)
    moved = np.abs(corrected_path[-1] - corrected_path[0]).max()
    assert moved > 0.05  # the atoms really moved, so the identity is not trivially met
    assert np.abs(corrected_path - raw_path).max() < 1e-6


def test_corrected_nve_conserves_corrected_energy(tmp_path, shared_models_dir):
    """Velocity Verlet at 1 fs on E' (M3GNet float64, 16 Si atoms at 600 K, 300 steps):
    total energy E' + K stays within 1 meV/atom of its start and drifts < 2 meV/atom/ps."""
    recipe = write_recipe(
        tmp_path,
        structure={"supercell": [2, 1, 1]},
        model={"name": "m3gnet", "models_dir": str(shared_models_dir), "dtype": "float64"},
        correction={"scale": SCALE},
        task={"ensemble": "nve", "timestep_fs": 1.0, "steps": 300, "temperature_K": 600},
        output={"write_every": 5},
    )
    assert main(["run", str(recipe)]) == 0
    with h5py.File(tmp_path / "out" / "corrected-T600K.h5", "r") as handle:
        total = handle["observables/total_energy/value"][:]
        kinetic = handle["observables/kinetic_energy/value"][:]
        assert handle["parameters"].attrs["softening_scale"] == SCALE
    n_atoms = 16
    assert kinetic.std() > 0.05  # energy really flows between kinetic and potential
    assert np.abs(total - total[0]).max() / n_atoms < 1e-3
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    drift = summary["jobs"][0]["conserved_energy_drift_eV_per_atom_per_ps"]
    assert abs(drift) < 2e-3


@pytest.mark.parametrize("ensemble", ["nvt_nose_hoover", "nvt_bussi", "npt_berendsen", "npt_mtk", "npt_mtk_aniso",
                                      "nvt_langevin"])
def test_each_ensemble_runs_and_records_its_observables(tmp_path, small_mace_path, ensemble):
    recipe = write_recipe(
        tmp_path,
        model={"name": "mace-mp-0", "checkpoint": str(small_mace_path), "dtype": "float64"},
        task={"ensemble": ensemble, "timestep_fs": 1.0, "steps": 20, "temperature_K": 900,
              "pressure_GPa": 2.0, "pdamp_fs": 50.0},
        output={"write_every": 2},
    )
    assert main(["run", str(recipe)]) == 0
    with h5py.File(tmp_path / "out" / "raw-T900K.h5", "r") as handle:
        observables = set(handle["observables"])
        edges = handle["particles/all/box/edges/value"][:]
    assert {"potential_energy", "kinetic_energy", "total_energy", "temperature"} <= observables
    if ensemble.startswith("npt"):
        assert {"volume", "pressure"} <= observables
        assert not np.allclose(edges[0], edges[-1])  # the barostat moved the cell
    else:
        np.testing.assert_array_equal(edges[0], edges[-1])
    if ensemble in ("nvt_nose_hoover", "npt_mtk", "npt_mtk_aniso"):
        assert "conserved_energy" in observables


def test_seeded_langevin_is_reproducible(tmp_path):
    positions = []
    for run in ("a", "b"):
        folder = tmp_path / run
        folder.mkdir()
        recipe = write_recipe(folder, task={"ensemble": "nvt_langevin", "steps": 10, "seed": 3})
        assert main(["run", str(recipe)]) == 0
        with h5py.File(folder / "out" / "raw-T500K.h5", "r") as handle:
            positions.append(handle["particles/all/position/value"][:])
    np.testing.assert_array_equal(positions[0], positions[1])


def test_prerelaxation_lowers_reference_energy(tmp_path, small_mace_path):
    rattled = bulk("Si", "diamond", a=5.43, cubic=True)
    rattled.rattle(0.1, seed=2)
    structure = tmp_path / "rattled.extxyz"
    rattled.write(structure)
    recipe = write_recipe(
        tmp_path,
        structure={"file": str(structure)},
        model={"name": "mace-mp-0", "checkpoint": str(small_mace_path), "dtype": "float64"},
        correction={"scale": 0.8}, compare=True,
        task={"steps": 4, "relax": {"fmax_eV_A": 0.01, "max_steps": 300}},
    )
    assert main(["run", str(recipe)]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["prerelax_converged"] is True
    from driver.models import load_model
    from driver.specs import ModelSpec

    model = load_model(ModelSpec(name="mace-mp-0", checkpoint=str(small_mace_path), dtype="float64"))
    rattled.calc = model.calculator
    assert summary["reference_energy_eV"] < rattled.get_potential_energy() - 1e-4
    # Each variant relaxed on its own surface: the same minimum within the tolerance; and E' = E0
    # at the corrected job's own relaxed start (its recorded reference energy).
    with h5py.File(tmp_path / "out" / "raw-T500K.h5") as raw, h5py.File(tmp_path / "out" / "corrected-T500K.h5") as cor:
        _, apart = find_mic(raw["particles/all/position/value"][0] - cor["particles/all/position/value"][0],
                            raw["particles/all/box/edges/value"][0], pbc=True)  # modulo lattice translations
        assert apart.max() < 0.05
        assert cor["observables/potential_energy/value"][0] == pytest.approx(
            cor["parameters"].attrs["reference_energy_eV"], abs=1e-9)
        assert raw["observables/potential_energy/value"][0] == pytest.approx(
            raw["parameters"].attrs["reference_energy_eV"], abs=1e-9)
