"""`driver sample`: ranked, physically sane candidates written for DFT."""

from __future__ import annotations

import numpy as np
import pytest
from ase.io import read

from driver.cli import main
from tests.conftest import SI_CIF


def test_sample_writes_ranked_candidates(tmp_path, capsys):
    out = tmp_path / "cand"
    code = main(["sample", str(SI_CIF), "--model", "chgnet", "--rattle", "0.03", "0.15", "--per-amplitude", "2",
                 "--md-temperature", "1500", "--md-steps", "20", "--md-every", "10", "--select", "5",
                 "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    frames = read(out / "candidates.extxyz", ":")
    assert len(frames) == 5
    scores = [f.info["model_mean_force_eV_A"] for f in frames]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 0
    origins = [f.info["origin"] for f in frames]
    assert origins[0].startswith("rattle-0.15A")  # the strongest distortion informs most
    # 6 candidates (4 rattles, 2 MD snapshots), 5 kept: the seeded 1500 K snapshots (thermal
    # displacements ~0.1 Å) outrank the 0.03 Å rattles, so both are kept and one small rattle goes.
    assert sorted(o for o in origins if o.startswith("md-")) == ["md-1500K-step10", "md-1500K-step20"]
    assert sum(o.startswith("rattle-0.03A") for o in origins) == 1
    start = read(SI_CIF)
    md_frames = [f for f in frames if f.info["origin"].startswith("md-")]
    for frame in md_frames:  # real MD frames: atoms moved from the start and between snapshots
        assert np.abs(frame.positions - start.positions).max() > 0.05
    assert np.abs(md_frames[0].positions - md_frames[1].positions).max() > 0.05
    folders = sorted((out / "vasp").iterdir())
    assert len(folders) == 5
    for frame, folder in zip(frames, folders, strict=True):
        poscar = read(folder / "POSCAR", format="vasp")
        np.testing.assert_allclose(poscar.positions, frame.positions, atol=1e-6)
        np.testing.assert_allclose(poscar.cell[:], frame.cell[:], atol=1e-9)
    assert "most informative first" in printed


def test_too_close_atoms_are_dropped(tmp_path, capsys):
    out = tmp_path / "cand"
    code = main(["sample", str(SI_CIF), "--model", "chgnet", "--rattle", "0.1", "--per-amplitude", "8",
                 "--min-distance-fraction", "0.9", "--select", "10", "--out", str(out)])
    assert code == 0
    frames = read(out / "candidates.extxyz", ":")
    assert 0 < len(frames) < 8  # 0.1 Å rattles put some pairs closer than 0.9 x 2.35 Å
    assert all(f.info["min_distance_A"] >= 0.9 * 2.35 - 0.01 for f in frames)


def test_all_candidates_dropped_is_a_clear_error(tmp_path, capsys):
    code = main(["sample", str(SI_CIF), "--model", "chgnet", "--rattle", "1.5", "--per-amplitude", "3",
                 "--min-distance-fraction", "0.95", "--out", str(tmp_path / "c")])
    assert code == 2 and "all 3 candidates put atoms closer than" in capsys.readouterr().err
    assert not (tmp_path / "c" / "candidates.extxyz").exists()


@pytest.mark.parametrize("args, expected", [
    (["missing.cif"], "missing.cif: structure file not found"),
    ([str(SI_CIF), "--rattle", "-0.1"], "--rattle: amplitudes must be > 0"),
    ([str(SI_CIF), "--rattle", "--md-temperature", "-5"], "--md-temperature: must be > 0"),
    ([str(SI_CIF), "--md-temperature", "300", "--timestep-fs", "50"], "--timestep-fs: must be > 0 and <= 10 fs, got 50"),
])
def test_bad_sample_input(tmp_path, capsys, args, expected):
    code = main(["sample", *args, "--model", "chgnet", "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and expected in err
