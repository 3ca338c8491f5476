"""An exploding simulation stops with a diagnosis (step, atoms, value) and keeps its frames."""

from __future__ import annotations

import json

import h5py
from ase.build import bulk

from driver.cli import main
from tests.conftest import write_recipe


def _job(folder):
    return json.loads((folder / "out" / "summary.json").read_text())["jobs"][0]


def test_runaway_temperature_stops_the_job(tmp_path, capsys, emt_family):
    """NVE with a 10 fs step (the largest a recipe takes) from strongly rattled EMT copper at 100 K:
    the potential energy released heats it past 5 x the target within a few steps."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.3, seed=2)
    atoms.write(tmp_path / "hot.extxyz")
    recipe = write_recipe(tmp_path, structure={"file": str(tmp_path / "hot.extxyz")}, model={"name": "emt", "dtype": "float64"},
                          task={"ensemble": "nve", "timestep_fs": 10.0, "steps": 400, "temperature_K": 100},
                          output={"write_every": 1})
    assert main(["run", str(recipe)]) == 1
    job = _job(tmp_path)
    assert job["status"] == "failed"
    assert "exploded: temperature" in job["error"] and "exceeds 5 x the target 100 K" in job["error"]
    assert "exploded" in capsys.readouterr().out
    with h5py.File(tmp_path / "out" / "raw-T100K.h5", "r") as handle:
        frames = handle["particles/all/position/value"].shape[0]
        assert handle.attrs["status"] == "failed"
        assert handle["observables/temperature/value"].shape[0] == frames
    assert 1 <= frames < 400 and f"the {frames} frames before are kept" in job["error"]


def test_atoms_too_close_name_the_pair(tmp_path, capsys, small_mace_path):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.positions[5] = atoms.positions[3] + [0.2, 0.1, 0.0]
    structure = tmp_path / "squeezed.extxyz"
    atoms.write(structure)
    recipe = write_recipe(tmp_path, structure={"file": str(structure)},
                          model={"name": "mace-mp-0", "checkpoint": str(small_mace_path)},
                          task={"min_distance_A": 0.5, "steps": 4})
    # Refused before the model loads (Task.check), by run as by validate; the MD-time check is
    # the same threshold and covers atoms that come closer during the run.
    assert main(["run", str(recipe)]) == 2
    assert not (tmp_path / "out" / "raw-T500K.h5").exists()
    assert main(["validate", str(recipe)]) == 2
    error = capsys.readouterr().err
    assert "atoms 3 and 5 are 0.224 Å apart, closer than min_distance_A = 0.5 Å" in error


def test_thresholds_are_recipe_settings(tmp_path, capsys):
    recipe = write_recipe(tmp_path, task={"max_temperature_factor": 1.0})
    assert main(["validate", str(recipe)]) == 2
    assert "task.max_temperature_factor: must be > 1, got 1.0" in capsys.readouterr().err
