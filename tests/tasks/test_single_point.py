"""task.kind: single_point: labels read back exactly, the correction's F/s on every frame, re-scoring
an earlier run's H5MD trajectory, corrected energies only where they mean something, the recipe."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from driver.cli import main
from tests.conftest import ROOT, emt_recipe

S = 0.8


def _labelled_frames(path, n=6, extra=None):
    frames = []
    for seed in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
        atoms.rattle(0.05, seed=seed)
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
        frames.append(atoms)
    write(path, frames + (extra or []))
    return frames


def _jobs(out):
    return {job["job"]: job for job in json.loads((out / "summary.json").read_text())["jobs"]}


def test_errors_against_the_files_labels_and_the_correction_on_every_frame(tmp_path, emt_family):
    frames = _labelled_frames(tmp_path / "labelled.extxyz")
    recipe = emt_recipe(tmp_path, {"kind": "single_point", "frames": str(tmp_path / "labelled.extxyz"),
                                   "chunk_size": 4, "stress": True})
    assert main(["run", str(recipe), "--out", str(tmp_path / "out")]) == 0
    raw, corrected = _jobs(tmp_path / "out")["raw"], _jobs(tmp_path / "out")["corrected"]
    # The labels are EMT's own: the raw model reproduces them exactly.
    assert raw["n_frames"] == 6 and raw["reference_forces_frames"] == 6 and raw["reference_energy_frames"] == 6
    assert raw["force_mae_eV_A"] < 1e-6 and raw["energy_mae_per_atom_eV"] < 1e-6  # extxyz keeps 8 decimals
    assert raw["force_slope"] == pytest.approx(1.0, abs=1e-6)
    assert corrected["force_slope"] == pytest.approx(raw["force_slope"] / S, rel=1e-10)
    with h5py.File(tmp_path / "out" / "raw.h5") as a, h5py.File(tmp_path / "out" / "corrected.h5") as b:
        np.testing.assert_allclose(b["results/single_point/forces_eV_A"][()], a["results/single_point/forces_eV_A"][()] / S)
        np.testing.assert_allclose(b["results/single_point/stresses_eV_A3"][()],
                                   a["results/single_point/stresses_eV_A3"][()] / S)
        np.testing.assert_allclose(a["results/single_point/energies_eV"][()],
                                   [f.get_potential_energy() for f in frames], atol=1e-6)
    assert (tmp_path / "out" / "parity.png").is_file()


def test_rescoring_an_earlier_md_trajectory_gives_its_energies(tmp_path, emt_family):
    md = emt_recipe(tmp_path, {"kind": "md", "ensemble": "nve", "steps": 20, "timestep_fs": 2.0,
                               "temperature_K": 300}, output={"write_every": 5})
    assert main(["run", str(md), "--out", str(tmp_path / "md")]) == 0
    trajectory = tmp_path / "md" / "raw-T300K.h5"
    recipe = emt_recipe(tmp_path / "rescore" if (tmp_path / "rescore").mkdir() is None else None,
                        {"kind": "single_point", "frames": str(trajectory), "index": "::2"}, compare=False,
                        correction=None)
    assert main(["run", str(recipe), "--out", str(tmp_path / "out")]) == 0
    raw = _jobs(tmp_path / "out")["raw"]
    with h5py.File(trajectory) as f:
        stored = f["observables/potential_energy/value"][()][::2]
    with h5py.File(tmp_path / "out" / "raw.h5") as f:
        np.testing.assert_allclose(f["results/single_point/energies_eV"][()], stored, atol=1e-9)
    assert raw["n_frames"] == len(stored) == 3 and raw["reference_forces_frames"] == 0


def test_corrected_energies_of_another_composition_are_undefined(tmp_path, emt_family):
    other = bulk("Al", "fcc", a=4.05, cubic=True)
    other.calc = SinglePointCalculator(other, energy=0.0, forces=np.zeros((4, 3)))
    _labelled_frames(tmp_path / "mixed.extxyz", n=3, extra=[other])
    recipe = emt_recipe(tmp_path, {"kind": "single_point", "frames": str(tmp_path / "mixed.extxyz")})
    assert main(["run", str(recipe), "--out", str(tmp_path / "out")]) == 0
    jobs = _jobs(tmp_path / "out")
    assert jobs["raw"]["energy_undefined_frames"] == 0 and jobs["corrected"]["energy_undefined_frames"] == 1
    with h5py.File(tmp_path / "out" / "corrected.h5") as f:
        energies = f["results/single_point/energies_eV"][()]
    assert np.isfinite(energies[:3]).all() and np.isnan(energies[3])


def test_a_bad_index_is_one_line(tmp_path, emt_family, capsys):
    _labelled_frames(tmp_path / "labelled.extxyz", n=2)
    recipe = emt_recipe(tmp_path, {"kind": "single_point", "frames": str(tmp_path / "labelled.extxyz"),
                                   "index": "7"})
    assert main(["run", str(recipe), "--out", str(tmp_path / "out")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "labelled.extxyz" in err[0] and "no frame '7'" in err[0], err


def test_shipped_recipe_with_chgnet(tmp_path):
    out = tmp_path / "out"
    assert main(["run", str(ROOT / "recipes" / "single_point.yaml"), "--out", str(out)]) == 0
    raw, corrected = _jobs(out)["raw"], _jobs(out)["corrected"]
    assert raw["n_frames"] == 12 and raw["reference_forces_frames"] == 12
    assert 0.01 < raw["force_mae_eV_A"] < 0.2  # CHGNet on PBE Li metal
    assert corrected["force_slope"] == pytest.approx(raw["force_slope"] / 0.627, rel=1e-6)
