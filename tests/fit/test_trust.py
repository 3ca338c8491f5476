"""A correction you can trust, on real PBE data: a fit from phonopy's Si finite-displacement files that
moves CHGNet's phonons toward DFT's, its verdict carried into the run and the report, and M3GNet on
NaCl (a negative slope) refused with one line."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import yaml

from driver.cli import main
from driver.tasks.phonons import mean_frequency_THz
from tests.conftest import SHARED

PHONOPY_VASP = SHARED / "data" / "phonopy_vasp"
MESH = [12, 12, 12]


def _need(path):
    if not path.exists():
        pytest.skip(f"DFT labels absent: expected {path} (see ../shared/data/README.md)")
    return path


def _mean_frequency_dft(folder) -> float:
    """phonopy's own mean mesh frequency from the DFT FORCE_SETS, by the rule the phonons task uses
    (12³ Γ-centred mesh, no NAC, real modes but Γ's three acoustic ones)."""
    import phonopy

    phonon = phonopy.load(folder / "phonopy_disp.yaml", force_sets_filename=folder / "FORCE_SETS", is_nac=False,
                          log_level=0)
    phonon.symmetrize_force_constants()
    phonon.run_mesh(MESH, is_gamma_center=True)
    return mean_frequency_THz(phonon.get_mesh_dict())


def test_si_phonon_fit_moves_phonons_toward_dft_and_its_verdict_reaches_the_run(tmp_path, capsys, caplog):
    """One DFT phonon calculation is the paper's one data point: fit s from it, run phonons raw and
    corrected at the DFT cell, and the corrected mean frequency is nearer phonopy's DFT one."""
    folder = _need(PHONOPY_VASP / "Si")
    correction = tmp_path / "correction.yaml"
    code = main(["fit", "--model", "chgnet", "--labels", str(folder / "phonopy_disp.yaml"), "--out", str(correction)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    record = yaml.safe_load(correction.read_text())
    s = record["softening_scale"]
    assert 0.55 < s < 0.7 and record["n_structures"] == 1 and record["n_force_components"] == 48
    assert record["force_rmse_after_eV_A"] < record["force_rmse_before_eV_A"]
    trust = record["trust"]
    assert trust["verdict"] == "warned" and trust["refusal_reasons"] == [] and not trust["accepted_untrusted"]
    from phonopy.file_IO import parse_FORCE_SETS

    dft_forces = parse_FORCE_SETS(filename=str(folder / "FORCE_SETS"))["first_atoms"][0]["forces"]
    assert trust["fitted_force_range_eV_A"]["max"] == pytest.approx(np.linalg.norm(dft_forces, axis=1).max())
    assert trust["held_out_force_mae_eV_A"] is None  # one structure: nothing to hold out
    assert len(record["per_force_bin"]) == 4 and "s per |DFT force| bin" in printed

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "si_dft_cell_phonons", "structure": {"file": str(folder / "POSCAR-unitcell")},
        "model": {"name": "chgnet"}, "correction": {"file": str(correction)}, "compare": True,
        "task": {"kind": "phonons", "supercell": [2, 2, 2], "displacement_A": 0.01, "band_points": 5, "mesh": MESH},
        "output": {"directory": str(tmp_path / "out")},
    }, sort_keys=False))
    capsys.readouterr()
    assert main(["validate", str(recipe)]) == 0  # validate warns as the run does, before any model loads
    validated = capsys.readouterr().out.splitlines()
    assert len(validated) == 2 and validated[1].startswith(f"{recipe}: WARNING: correction {correction} was fitted with")
    caplog.set_level("INFO")
    assert main(["run", str(recipe)]) == 0
    warning_lines = [r.getMessage() for r in caplog.records if "fitted with" in r.getMessage()]
    assert len(warning_lines) == 1 and warning_lines[0].startswith(f"WARNING: correction {correction} was fitted with")
    running = next(i for i, r in enumerate(caplog.records) if r.getMessage().startswith("running "))
    assert caplog.records.index(next(r for r in caplog.records if "fitted with" in r.getMessage())) < running

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["correction_verdict"] == "warned" and summary["correction_warnings"] == trust["warnings"]
    means = {job["variant"]: job["mean_frequency_THz"] for job in summary["jobs"]}
    dft = _mean_frequency_dft(folder)
    with capsys.disabled():  # the numbers README.md quotes
        print(f"\nSi mean frequency (12³ mesh): DFT {dft:.3f}, CHGNet raw {means['raw']:.3f}, "
              f"corrected (s = {s:.4f}) {means['corrected']:.3f} THz")
    assert dft == pytest.approx(9.73, abs=0.05)  # ../shared/data/README.md: 9.73 counting modes above 0.5 THz
    assert abs(means["corrected"] - dft) < abs(means["raw"] - dft)
    assert means["corrected"] == pytest.approx(means["raw"] / np.sqrt(s), rel=0.01)  # exact but for modes near 0 THz
    with h5py.File(tmp_path / "out" / "corrected.h5", "r") as handle:
        attrs = handle["parameters"].attrs
        assert attrs["correction_verdict"] == "warned"
        assert json.loads(attrs["correction_fitted_force_range_eV_A"]) == trust["fitted_force_range_eV_A"]

    capsys.readouterr()  # the run's own report
    assert main(["compare", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.startswith(f"correction: {correction}, s = {s:.4g}; verdict: warned")
    report = (tmp_path / "out" / "report.md").read_text().splitlines()
    assert report[2] == "## Correction trust" and report[4].startswith(f"- correction: {correction}")
    assert any(line.startswith("- warning: only 48 force components") for line in report[4:12])


def test_m3gnet_on_nacl_is_refused_with_one_line(tmp_path, capsys, shared_models_dir):
    """M3GNet's forces on phonopy's NaCl displacements point against PBE's (s < 0): refused, no file,
    and not even --accept-untrusted writes a scale a recipe cannot use."""
    folder = _need(PHONOPY_VASP / "NaCl")
    out = tmp_path / "c.yaml"
    code = main(["fit", "--model", "m3gnet", "--models-dir", str(shared_models_dir), "--labels", str(folder),
                 "--out", str(out), "--accept-untrusted"])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    with capsys.disabled():
        print("\n" + (errors[0] if errors else captured.err))
    assert code == 2 and len(errors) == 1 and not out.exists()
    assert errors[0].startswith(f"error: {folder}: correction refused, nothing written: s = -")
    assert "must be > 0" in errors[0] and "not even with --accept-untrusted" in errors[0]
    assert "UNTRUSTED: s = -" in captured.out  # the numbers behind the refusal are still shown
