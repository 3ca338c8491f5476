"""output.trajectory: false: observables every write_every steps, the particles' first frame only,
and the same observables as a run that stores everything (the physics does not change)."""

from __future__ import annotations

import json

import h5py
import numpy as np

from driver.cli import main
from tests.conftest import write_recipe

JOB = "raw-T500K"


def test_observables_only_file_keeps_one_frame_and_every_observable(tmp_path, capsys):
    """CHGNet, 8 Si atoms, 10 steps: the same seed with and without frames gives the same
    observables; without, /particles holds the start only and no velocities or forces."""
    runs = {}
    for trajectory in (True, False):
        folder = tmp_path / str(trajectory)
        folder.mkdir()
        recipe = write_recipe(folder, task={"steps": 10}, output={"trajectory": trajectory, "checkpoint_every": 5})
        assert main(["-q", "run", str(recipe)]) == 0
        runs[trajectory] = folder / "out"
    with h5py.File(runs[True] / f"{JOB}.h5", "r") as full, h5py.File(runs[False] / f"{JOB}.h5", "r") as lean:
        particles = lean["particles/all"]
        assert set(particles) == {"box", "mass", "position", "species"}  # no velocity, no force
        assert particles["position/value"].shape == (1, 8, 3) and particles["box/edges/value"].shape == (1, 3, 3)
        assert particles["position/step"][:].tolist() == [0]
        np.testing.assert_array_equal(particles["position/value"][0], full["particles/all/position/value"][0])
        assert full["particles/all/position/value"].shape == (6, 8, 3)
        assert set(lean["observables"]) == set(full["observables"])
        for name in full["observables"]:
            assert lean[f"observables/{name}/step"][:].tolist() == [0, 2, 4, 6, 8, 10], name
            np.testing.assert_allclose(lean[f"observables/{name}/value"][:], full[f"observables/{name}/value"][:],
                                       rtol=0, atol=1e-9, err_msg=name)
            np.testing.assert_array_equal(lean[f"observables/{name}/time"][:], full[f"observables/{name}/time"][:])
        assert "checkpoint" in lean
    summaries = [json.loads((runs[t] / "summary.json").read_text())["jobs"][0] for t in (True, False)]
    for key in ("frames", "mean_temperature_K", "rms_displacement_A", "final_potential_energy_eV"):
        assert summaries[1][key] == summaries[0][key], key


def test_observables_only_is_refused_for_tasks_without_a_trajectory(tmp_path, capsys):
    recipe = write_recipe(tmp_path, task={"kind": "phonons", "supercell": [2, 2, 2]}, output={"trajectory": False})
    assert main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "output.trajectory: false drops MD frames; task.kind phonons" in err, err


def test_magnetic_moments_on_request_only(tmp_path):
    """output.magmoms: CHGNet's moments with every stored frame (as its calculator gives them);
    without it the file has none and the model is never asked for them."""
    import h5py
    import numpy as np
    from ase.io import read
    from chgnet.model.dynamics import CHGNetCalculator

    from driver.cli import main
    from tests.conftest import SI_CIF, write_recipe

    recipe = write_recipe(tmp_path, task={"steps": 4}, output={"write_every": 2, "magmoms": True})
    assert main(["run", str(recipe), "--out", str(tmp_path / "out")]) == 0
    with h5py.File(tmp_path / "out" / "raw-T500K.h5") as f:
        moments = f["particles/all/magnetic_moment/value"][()]
        positions = f["particles/all/position/value"][()]
        cell = f["particles/all/box/edges/value"][-1]
        assert f["particles/all/magnetic_moment/value"].attrs["unit"] == "mu_B"
    assert moments.shape == (3, 8) and np.isfinite(moments).all()
    atoms = read(SI_CIF)
    atoms.positions, atoms.cell = positions[-1], cell
    atoms.calc = CHGNetCalculator(use_device="cpu")
    np.testing.assert_allclose(moments[-1], atoms.get_magnetic_moments(), atol=1e-5)
    plain = write_recipe(tmp_path / "plain" if (tmp_path / "plain").mkdir() is None else None, task={"steps": 4})
    assert main(["run", str(plain), "--out", str(tmp_path / "plain-out")]) == 0
    with h5py.File(tmp_path / "plain-out" / "raw-T500K.h5") as f:
        assert "magnetic_moment" not in f["particles/all"]


def test_magnetic_moments_of_a_model_without_them_are_refused(tmp_path, capsys):
    from driver.cli import main
    from tests.conftest import write_recipe

    recipe = write_recipe(tmp_path, model={"name": "mace-mp-0", "checkpoint": None}, output={"magmoms": True})
    assert main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "output.magmoms" in err[0] and "mace-mp-0 predicts no magnetic moments" in err[0], err
