"""`driver fit`: the softening scale from labels, checked against numpy and known answers."""

from __future__ import annotations

from pathlib import Path

import ase
import h5py
import numpy as np
import pytest
import yaml
from ase.build import bulk
from ase.io import read, write

from driver.cli import main
from driver.labels import read_labels
from tests.conftest import SHARED, write_recipe

SI_DATA = SHARED / "data" / "si_rare_events_pbe.extxyz"
# Real VASP output that ASE ships for its own reader tests: an OUTCAR (Ni18, forces up to 2.2 eV/Å)
# and a vasprun.xml (C2 on symmetry sites: every force exactly zero).
ASE_VASP_DATA = Path(ase.__file__).parent / "test" / "testdata" / "vasp"


@pytest.fixture(scope="module")
def dft_subset(tmp_path_factory):
    if not SI_DATA.is_file():
        pytest.skip(f"DFT labels absent: expected {SI_DATA} (see ../shared/data/README.md)")
    path = tmp_path_factory.mktemp("labels") / "si_subset.extxyz"
    frames = read(SI_DATA, ":")
    write(path, frames[:3] + frames[100:103])  # 3 vacancy + 3 interstitial rare events
    return path


def _fit(capsys, *args):
    code = main(["fit", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _synthetic_labels(calculator, path, true_scale, n=2):
    """Labels that ARE the model's PES stiffened by 1/true_scale: forces F/s, energies E/s."""
    frames = []
    for seed in range(n):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 1, 1))
        atoms.rattle(0.15, seed=seed)
        atoms.calc = calculator
        forces, energy = atoms.get_forces(), atoms.get_potential_energy()
        atoms.calc = None
        atoms.arrays["REF_forces"] = forces / true_scale
        atoms.info["REF_energy"] = energy / true_scale
        frames.append(atoms)
    write(path, frames)
    return path


def test_recovers_known_scale(tmp_path, capsys, m3gnet64_model, shared_models_dir):
    labels = _synthetic_labels(m3gnet64_model.calculator, tmp_path / "labels.extxyz", true_scale=0.83)
    out = tmp_path / "correction.yaml"
    code, printed, err = _fit(capsys, "--model", "m3gnet", "--models-dir", str(shared_models_dir),
                              "--dtype", "float64", "--labels", str(labels), "--out", str(out))
    assert code == 0, err
    record = yaml.safe_load(out.read_text())
    assert abs(record["softening_scale"] - 0.83) < 1e-6
    assert record["r_squared"] == pytest.approx(1.0, abs=1e-9)
    assert record["force_mae_after_eV_A"] < 1e-6 < record["force_mae_before_eV_A"]
    assert record["interval_95"][0] <= record["softening_scale"] <= record["interval_95"][1]
    # Both structures share the composition, so relative energies are checked too, and corrected ones are exact.
    assert record["n_structures_energy"] == 2 and record["energy_mae_after_eV_atom"] < 1e-8
    assert "softening scale s = 0.8300" in printed


def test_numbers_equal_direct_numpy(tmp_path, capsys, dft_subset, chgnet_model):
    out = tmp_path / "correction.yaml"
    plot = tmp_path / "parity.png"
    code, printed, err = _fit(capsys, "--model", "chgnet", "--labels", str(dft_subset), "--out", str(out),
                              "--plot", str(plot))
    assert code == 0, err
    record = yaml.safe_load(out.read_text())

    structures = read_labels([dft_subset])
    model, reference, model_energy = [], [], []
    for s in structures:
        atoms = s.atoms.copy()
        atoms.calc = chgnet_model.calculator
        model.append(atoms.get_forces().ravel())
        model_energy.append(float(atoms.get_potential_energy()))
        reference.append(s.forces_eV_A.ravel())
    m, r = np.concatenate(model).astype(np.float64), np.concatenate(reference)
    s = (m @ r) / (r @ r)
    # The fit's forces may come from CHGNet's batched call (batched: auto picks by timing), whose
    # float32 round-off differs from the stock calculator's in the last bits: 1e-5, not 1e-9.
    assert record["softening_scale"] == pytest.approx(s, rel=1e-5)
    assert record["n_structures"] == 6 and record["n_force_components"] == m.size
    assert record["force_mae_before_eV_A"] == pytest.approx(np.abs(m - r).mean(), rel=1e-5)
    assert record["force_mae_after_eV_A"] == pytest.approx(np.abs(m / s - r).mean(), rel=1e-5)
    assert record["force_rmse_after_eV_A"] == pytest.approx(np.sqrt(((m / s - r) ** 2).mean()), rel=1e-5)
    assert record["r_squared"] == pytest.approx(1 - ((m - s * r) ** 2).sum() / ((m - m.mean()) ** 2).sum(), rel=1e-5)
    assert record["per_element"]["Si"]["softening_scale"] == pytest.approx(s, rel=1e-5)
    # Relative energies within each composition (Si63: vacancy frames, Si65: interstitial frames).
    errors = []
    for size in (63, 65):
        idx = [i for i, st in enumerate(structures) if len(st.atoms) == size]
        dm = np.array([model_energy[i] for i in idx]) - np.mean([model_energy[i] for i in idx])
        dr = np.array([structures[i].energy_eV for i in idx]) - np.mean([structures[i].energy_eV for i in idx])
        errors += list(np.abs(dm / s - dr) / size)
    assert record["energy_mae_after_eV_atom"] == pytest.approx(np.mean(errors), rel=1e-6)
    # CHGNet softens on these far-from-equilibrium structures, and the correction helps.
    assert s < 0.8 and record["force_mae_after_eV_A"] < record["force_mae_before_eV_A"]
    assert record["model"]["weights_sha256"] == chgnet_model.weights_sha256
    assert len(record["labels"]["sha256"]) == 64
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_correction_file_round_trips_into_a_run(tmp_path, capsys, dft_subset):
    correction = tmp_path / "correction.yaml"
    assert _fit(capsys, "--model", "chgnet", "--labels", str(dft_subset), "--out", str(correction))[0] == 0
    fitted = yaml.safe_load(correction.read_text())["softening_scale"]
    recipe = write_recipe(tmp_path, correction={"file": "correction.yaml"}, compare=True, task={"steps": 4})
    assert main(["run", str(recipe)]) == 0
    with h5py.File(tmp_path / "out" / "corrected-T500K.h5", "r") as handle:
        assert handle["parameters"].attrs["softening_scale"] == fitted
        assert handle["parameters"].attrs["correction_source"] == str(correction)
        forces = handle["particles/all/force/value"][0]
    with h5py.File(tmp_path / "out" / "raw-T500K.h5", "r") as handle:
        np.testing.assert_allclose(forces * fitted, handle["particles/all/force/value"][0], rtol=1e-5, atol=1e-6)


def test_correction_for_another_model_is_refused(tmp_path, capsys, dft_subset, small_mace_path):
    correction = tmp_path / "correction.yaml"
    assert _fit(capsys, "--model", "chgnet", "--labels", str(dft_subset), "--out", str(correction))[0] == 0
    recipe = write_recipe(tmp_path, model={"name": "mace-mp-0", "checkpoint": str(small_mace_path)},
                          correction={"file": "correction.yaml"})
    code = main(["run", str(recipe)])
    err = capsys.readouterr().err
    assert code == 2 and "model.name: fitted for 'chgnet', but the recipe's model is 'mace-mp-0'" in err


def test_same_family_other_weights_are_refused(tmp_path, capsys, small_mace_path):
    from tests.conftest import build_small_mace

    other = build_small_mace(tmp_path / "other.model", seed=1)
    correction = tmp_path / "correction.yaml"
    correction.write_text(yaml.safe_dump({"softening_scale": 0.8, "model": {"name": "mace-mp-0", "weights_sha256": "0" * 64}}))
    recipe = write_recipe(tmp_path, model={"name": "mace-mp-0", "checkpoint": str(other)},
                          correction={"file": "correction.yaml"})
    assert main(["run", str(recipe)]) == 2
    assert "model.weights_sha256: fitted for weights 000000000000" in capsys.readouterr().err


def test_one_structure_near_equilibrium_warns(tmp_path, capsys, m3gnet64_model, shared_models_dir):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.005, seed=1)
    atoms.calc = m3gnet64_model.calculator
    forces = atoms.get_forces()
    atoms.calc = None
    atoms.arrays["REF_forces"] = forces / 0.9 + np.random.default_rng(0).normal(0, 0.01, forces.shape)
    labels = tmp_path / "one.extxyz"
    write(labels, atoms)
    code, printed, err = _fit(capsys, "--model", "m3gnet", "--models-dir", str(shared_models_dir), "--labels",
                              str(labels), "--out", str(tmp_path / "c.yaml"))
    assert code == 0, err
    assert "bootstrap over atoms of the single structure" in printed
    assert "WARNING: the labels are near equilibrium" in printed
    assert "WARNING: only 24 force components" in printed


def test_forces_unrelated_to_the_model_are_refused_unless_accepted(tmp_path, capsys, caplog, chgnet_model):
    """Reference forces that are noise (plus a small share of the model's, so that s > 0) on real,
    rattled Si: no single scale describes them, so `driver fit` refuses to write the correction
    (one line, exit 2); --accept-untrusted writes it with the verdict in the file, and a run using it
    says so before its jobs start. Labels that ARE the model's forces scaled (R² = 1) pass."""
    rng = np.random.default_rng(7)
    frames = []
    for seed in range(2):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 1, 1))
        atoms.rattle(0.15, seed=seed)
        atoms.calc = chgnet_model.calculator
        model = atoms.get_forces()
        atoms.calc = None
        noise = rng.normal(0.0, 1.0, model.shape)
        noise -= (noise.ravel() @ model.ravel()) / (model.ravel() @ model.ravel()) * model  # uncorrelated with the model
        atoms.arrays["REF_forces"] = noise + 0.05 * model
        frames.append(atoms)
    write(tmp_path / "noise.extxyz", frames)
    out = tmp_path / "noise.yaml"
    args = ["--model", "chgnet", "--labels", str(tmp_path / "noise.extxyz"), "--out", str(out)]
    code, printed, err = _fit(capsys, *args)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and not out.exists(), err
    assert "correction refused, nothing written: " in errors[0] and "< 0.5: model and DFT forces" in errors[0]
    assert errors[0].endswith("(--accept-untrusted writes it anyway)")

    code, printed, err = _fit(capsys, *args, "--accept-untrusted")
    assert code == 0, err
    record = yaml.safe_load(out.read_text())
    assert 0 < record["softening_scale"] and record["r_squared"] < 0.2
    assert record["trust"]["verdict"] == "untrusted" and record["trust"]["accepted_untrusted"] is True
    assert f"WARNING: model and DFT forces agree poorly (R² = {record['r_squared']:.2f} < 0.8)" in printed
    assert f"UNTRUSTED: R² = {record['r_squared']:.2f} < 0.5" in printed
    recipe = write_recipe(tmp_path, correction={"file": str(out)}, compare=True, task={"steps": 2})
    assert main(["run", str(recipe)]) == 0
    assert f"WARNING: correction {out} is UNTRUSTED (written with --accept-untrusted): R² = " in caplog.text
    with h5py.File(tmp_path / "out" / "corrected-T500K.h5", "r") as handle:
        assert handle["parameters"].attrs["correction_verdict"] == "untrusted"

    labels = _synthetic_labels(chgnet_model.calculator, tmp_path / "trusted.extxyz", true_scale=0.8)
    code, printed, err = _fit(capsys, "--model", "chgnet", "--labels", str(labels), "--out", str(tmp_path / "t.yaml"))
    assert code == 0, err
    record = yaml.safe_load((tmp_path / "t.yaml").read_text())
    assert record["r_squared"] > 0.99 and record["trust"]["refusal_reasons"] == []
    assert record["held_out"]["force_mae_corrected_eV_A"] < 1e-4 < record["held_out"]["force_mae_raw_eV_A"]
    assert "R² = 1.000" in printed and "agree poorly" not in printed and "UNTRUSTED" not in printed


def test_labels_from_calculator_results(tmp_path, capsys, m3gnet64_model, shared_models_dir):
    """Files whose reference values are the calculator results (as ASE reads vasprun.xml/OUTCAR)."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.2, seed=4)
    atoms.calc = m3gnet64_model.calculator
    from ase.calculators.singlepoint import SinglePointCalculator

    labelled = atoms.copy()
    labelled.calc = SinglePointCalculator(labelled, energy=atoms.get_potential_energy(), forces=atoms.get_forces() / 0.5)
    labels = tmp_path / "results.extxyz"
    write(labels, labelled)
    code, printed, err = _fit(capsys, "--model", "m3gnet", "--models-dir", str(shared_models_dir), "--dtype",
                              "float64", "--labels", str(labels), "--out", str(tmp_path / "c.yaml"))
    assert code == 0, err
    assert abs(yaml.safe_load((tmp_path / "c.yaml").read_text())["softening_scale"] - 0.5) < 1e-6


@pytest.mark.parametrize("content, expected", [
    (None, "labels file not found"),
    ("not an xyz file at all\n", "cannot read labelled structures"),
    ("2\nLattice=\"5 0 0 0 5 0 0 0 5\" Properties=species:S:1:pos:R:3 pbc=\"T T T\"\nSi 0 0 0\nSi 1 1 1\n",
     "frame 0: no reference forces"),
])
def test_bad_label_files_are_one_line_errors(tmp_path, capsys, content, expected):
    labels = tmp_path / "labels.extxyz"
    if content is not None:
        labels.write_text(content)
    code, _, err = _fit(capsys, "--model", "chgnet", "--labels", str(labels), "--out", str(tmp_path / "c.yaml"))
    assert code == 2 and err.count("\n") == 1
    assert str(labels) in err and expected in err


def test_sign_flipped_labels_are_refused(tmp_path, capsys, dft_subset):
    """Reference forces with the wrong sign fit s < 0, which no recipe can use: one line, no file."""
    frames = read(dft_subset, ":")
    for frame in frames:
        frame.arrays["REF_forces"] = -frame.arrays["REF_forces"]
    flipped = tmp_path / "flipped.extxyz"
    write(flipped, frames)
    out = tmp_path / "c.yaml"
    code, _, err = _fit(capsys, "--model", "chgnet", "--labels", str(flipped), "--out", str(out))
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # stderr also has CHGNet's banner
    assert code == 2 and len(errors) == 1, err
    assert str(flipped) in err and "must be > 0" in err and not out.exists()


def test_real_vasp_outcar_and_vasprun(tmp_path, capsys):
    """OUTCAR and vasprun.xml read through ASE; a force-free structure is named in a warning and
    leaves the fit (and its bootstrap interval) well defined."""
    outcar, vasprun = ASE_VASP_DATA / "OUTCAR_example_1", ASE_VASP_DATA / "vasprun_pstress.xml"
    assert outcar.is_file() and vasprun.is_file(), "ASE's VASP test data moved"
    out = tmp_path / "c.yaml"
    code, printed, err = _fit(capsys, "--model", "chgnet", "--labels", str(outcar), str(vasprun), "--out", str(out))
    assert code == 0, err
    record = yaml.safe_load(out.read_text())
    reference = read(outcar).get_forces()
    assert record["n_structures"] == 2 and record["n_force_components"] == 3 * (18 + 2)
    assert 0 < record["softening_scale"] and np.isfinite(record["interval_95"]).all()
    assert record["per_element"]["C"]["softening_scale"] is None  # carbon felt no force
    assert record["mean_abs_reference_force_eV_A"] == pytest.approx(np.abs(reference).sum() / 60)
    assert "1 of 2 structure(s) have no reference force" in printed and "C n/a (no force)" in printed

    code, _, err = _fit(capsys, "--model", "chgnet", "--labels", str(vasprun), "--out", str(tmp_path / "z.yaml"))
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "every reference force is zero" in errors[0]
    assert not (tmp_path / "z.yaml").exists()


def test_missing_named_forces_key(tmp_path, capsys, dft_subset):
    code, _, err = _fit(capsys, "--model", "chgnet", "--labels", str(dft_subset), "--forces-key", "PBE_forces",
                        "--out", str(tmp_path / "c.yaml"))
    assert code == 2 and "frame 0: no reference array 'PBE_forces'" in err


def test_existing_correction_file_needs_overwrite(tmp_path, capsys, dft_subset):
    out = tmp_path / "c.yaml"
    out.write_text("keep me")
    code, _, err = _fit(capsys, "--model", "chgnet", "--labels", str(dft_subset), "--out", str(out))
    assert code == 2 and "pass --overwrite" in err and out.read_text() == "keep me"


def test_fit_with_checkpoint_path(tmp_path, capsys, small_mace_path, mace64_model):
    labels = _synthetic_labels(mace64_model.calculator, tmp_path / "labels.extxyz", true_scale=0.7, n=1)
    code, printed, err = _fit(capsys, "--model", str(small_mace_path), "--dtype", "float64", "--labels", str(labels),
                              "--out", str(tmp_path / "c.yaml"))
    assert code == 0, err
    record = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert record["model"]["name"] == "mace-mp-0" and record["model"]["checkpoint"] == str(small_mace_path)
    assert abs(record["softening_scale"] - 0.7) < 1e-6
