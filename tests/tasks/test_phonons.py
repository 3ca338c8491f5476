"""Phonons through phonopy: agreement with phonopy driven by hand, ASR, the exact 1/sqrt(s) scaling,
and imaginary modes reported where they are."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from driver.cli import main
from tests.conftest import ROOT, write_recipe

SCALE = 0.627


@pytest.fixture(scope="module")
def si_phonon_run(tmp_path_factory):
    """The shipped recipe, as a user runs it."""
    out = tmp_path_factory.mktemp("phonons") / "out"
    assert main(["run", str(ROOT / "recipes" / "phonons.yaml"), "--out", str(out)]) == 0
    return out


def _results(path):
    with h5py.File(path, "r") as handle:
        group = handle["results/phonons"]
        return {key: group[key][()] for key in group} | {"attrs": dict(group.attrs)}


def _raw_start(run) -> Atoms:
    """The raw job's relaxed unit cell, as its file stores it (frame 0)."""
    with h5py.File(run / "raw.h5", "r") as handle:
        cell = handle["particles/all/box/edges/value"][0]
        positions = handle["particles/all/position/value"][0]
        numbers = handle["particles/all/species"][()]
    return Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)


def test_corrected_frequencies_are_raw_over_sqrt_s(si_phonon_run):
    """Each variant relaxed its cell on its own surface (to fmax 0.005 eV/Å), so the shipped
    recipe's frequencies are /sqrt(s) up to that relaxation; the exact identity is the next test."""
    raw, corrected = _results(si_phonon_run / "raw.h5"), _results(si_phonon_run / "corrected.h5")
    np.testing.assert_allclose(corrected["band_frequencies_THz"] * math.sqrt(SCALE), raw["band_frequencies_THz"],
                               rtol=0.01, atol=0.05)
    assert raw["band_frequencies_THz"].max() > 10  # silicon's optical modes are near 15 THz


def test_the_wrapper_scales_force_constants_exactly(si_phonon_run, chgnet_model):
    """F' = F/s on identical displacements: force constants /s, frequencies /sqrt(s), exactly."""
    from driver.correction import SofteningCorrection
    from driver.tasks.phonons import PhononTask, compute_force_sets, make_phonopy

    atoms = _raw_start(si_phonon_run)
    spec = PhononTask(kind="phonons", supercell=[1, 1, 1])
    frequencies = {}
    for name, potential in (("raw", chgnet_model), ("corrected", SofteningCorrection(chgnet_model, SCALE, -1.0))):
        phonon = make_phonopy(atoms, spec)
        phonon.forces, _ = compute_force_sets(phonon, potential, batched=False, batch_size=None)
        phonon.produce_force_constants()
        frequencies[name] = phonon.get_frequencies([0.5, 0.0, 0.0])
    np.testing.assert_allclose(frequencies["corrected"] * math.sqrt(SCALE), frequencies["raw"], rtol=1e-6, atol=1e-6)


def test_acoustic_modes_vanish_at_gamma_and_si_is_stable(si_phonon_run):
    summary = json.loads((si_phonon_run / "summary.json").read_text())
    for job in summary["jobs"]:
        assert job["status"] == "completed"
        gamma = sorted(job["frequencies_THz"], key=abs)
        assert len(gamma) == 6  # 2-atom primitive cell found by phonopy
        assert max(abs(f) for f in gamma[:3]) < 0.05
        assert job["imaginary_modes"] is False
    assert summary["prerelax_converged"] is True


def test_equals_phonopy_driven_by_hand(si_phonon_run, chgnet_model):
    """Same relaxed cell, same calculator, phonopy's documented steps: bands within 0.01 THz."""
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    unit = _raw_start(si_phonon_run)
    phonon = Phonopy(PhonopyAtoms(symbols=unit.get_chemical_symbols(), cell=unit.cell[:],
                                  scaled_positions=unit.get_scaled_positions()),
                     supercell_matrix=np.eye(3, dtype=int) * 2, primitive_matrix="auto")
    phonon.generate_displacements(distance=0.01)
    forces = []
    for supercell in phonon.supercells_with_displacements:
        atoms = Atoms(supercell.symbols, cell=supercell.cell, scaled_positions=supercell.scaled_positions, pbc=True)
        atoms.calc = chgnet_model.calculator
        forces.append(atoms.get_forces())
    phonon.forces = np.array(forces)
    phonon.produce_force_constants()
    phonon.symmetrize_force_constants()  # phonopy's acoustic-sum-rule step, as the driver does
    raw = _results(si_phonon_run / "raw.h5")
    phonon.run_qpoints(raw["band_qpoints"])
    np.testing.assert_allclose(phonon.get_qpoints_dict()["frequencies"], raw["band_frequencies_THz"], atol=0.01)


def test_exports_continue_in_phonopy_and_plots(si_phonon_run):
    import phonopy

    raw = _results(si_phonon_run / "raw.h5")
    loaded = phonopy.load(si_phonon_run / "raw.phonopy.yaml")
    loaded.run_qpoints([[0, 0, 0]])
    reloaded, stored = np.sort(loaded.get_qpoints_dict()["frequencies"][0]), np.sort(raw["gamma_frequencies_THz"])
    # Γ's three acoustic modes are zero up to round-off (whose sign and size the reload may change):
    # both near zero; every optical mode the same to 1e-6 THz.
    acoustic = np.abs(stored) < 0.1
    assert acoustic.sum() == 3 and np.all(np.abs(reloaded[np.abs(reloaded) < 0.1]) < 1e-3)
    np.testing.assert_allclose(reloaded[~acoustic], stored[~acoustic], atol=1e-6)
    for name in ("raw.phonons.png", "corrected.phonons.png", "phonons_raw_vs_corrected.png"):
        data = (si_phonon_run / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    thermal = raw["heat_capacity_J_K_mol"]
    assert thermal[0] == pytest.approx(0, abs=1e-6) and np.all(np.diff(thermal) >= -1e-9)
    assert json.loads(raw["attrs"]["band_labels"])[0] == "Γ"
    with h5py.File(si_phonon_run / "raw.h5", "r") as handle:  # DESIGN.md: every dataset states its unit
        units = {key: handle["results/phonons"][key].attrs.get("unit") for key in handle["results/phonons"]}
    assert all(units.values()), f"datasets without a unit: {[k for k, u in units.items() if not u]}"
    assert units["band_frequencies_THz"] == "THz" and units["force_constants_eV_A2"] == "eV Angstrom-2"
    assert units["band_qpoints"] == "1" and units["heat_capacity_J_K_mol"] == "J K-1 mol-1"


def test_imaginary_modes_are_named(tmp_path, capsys):
    """fcc silicon at a = 3.9 Å is mechanically unstable for CHGNet (checked by hand: -4.9 THz)."""
    structure = tmp_path / "fcc_si.extxyz"
    bulk("Si", "fcc", a=3.9).write(structure)
    recipe = write_recipe(tmp_path, structure={"file": str(structure)},
                          task={"kind": "phonons", "supercell": [3, 3, 3], "mesh": [6, 6, 6], "band_points": 11})
    assert main(["run", str(recipe)]) == 0
    printed = capsys.readouterr().out
    job = json.loads((tmp_path / "out" / "summary.json").read_text())["jobs"][0]
    assert job["imaginary_modes"] is True
    assert job["imaginary_qpoints"]
    assert any(q.split()[0] in {"X", "W", "K", "L", "U"} for q in job["imaginary_qpoints"])
    assert min(float(q.split()[-2]) for q in job["imaginary_qpoints"]) < -1.0
    assert "IMAGINARY modes at" in printed


def test_supercell_from_minimum_length(tmp_path):
    structure = tmp_path / "si.extxyz"
    bulk("Si", "diamond", a=5.43).write(structure)  # primitive: lattice vectors of 3.84 Å
    recipe = write_recipe(tmp_path, structure={"file": str(structure)},
                          task={"kind": "phonons", "supercell_min_length_A": 7.0, "mesh": [4, 4, 4], "band_points": 5})
    assert main(["run", str(recipe)]) == 0
    job = json.loads((tmp_path / "out" / "summary.json").read_text())["jobs"][0]
    assert job["supercell_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]


def test_mean_frequency_does_not_depend_on_the_sign_of_gamma_acoustic_round_off():
    """Γ's acoustic modes are zero up to round-off: +1e-4 or -1e-4 THz, the mean is the same,
    and equals the mean of every other real mode."""
    from driver.tasks.phonons import mean_frequency_THz

    others = np.array([[1.5, 2.0, 2.5, 9.0, 9.5, 10.0], [-0.2, 3.0, 3.5, 8.0, 8.5, 9.0]])
    qpoints = np.array([[0.0, 0.0, 0.0], [0.25, 0.0, 0.0], [0.5, 0.0, 0.0]])
    means = []
    for noise in ([1e-4, 2e-4, 3e-4], [-1e-4, 2e-4, -3e-4], [-1e-4, -2e-4, -3e-4]):
        gamma = np.array([*noise, 12.0, 12.5, 13.0])
        means.append(mean_frequency_THz({"qpoints": qpoints, "frequencies": np.vstack([gamma, others])}))
    real = np.concatenate([[12.0, 12.5, 13.0], others[others > 0]])
    assert len(set(means)) == 1 and means[0] == pytest.approx(real.mean(), rel=1e-12)
