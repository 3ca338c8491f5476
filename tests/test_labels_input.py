"""`driver fit` on bad label files: exit 2 and one line, before any model is loaded."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.io import write

from driver.cli import main


def _si(**arrays):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    for name, value in arrays.items():
        atoms.arrays[name] = value
    return atoms


def _no_forces(path):
    write(path, _si())


def _nan_forces(path):
    forces = np.zeros((8, 3))
    forces[2, 1] = np.nan
    write(path, _si(REF_forces=forces))


def _nan_energy(path):
    atoms = _si(REF_forces=np.zeros((8, 3)))
    atoms.info["REF_energy"] = float("nan")
    write(path, atoms)


def _text_energy(path):
    atoms = _si(REF_forces=np.zeros((8, 3)))
    atoms.info["REF_energy"] = "high"
    write(path, atoms)


def _atom_count_mismatch(path):
    write(path, _si(REF_forces=np.zeros((8, 3))))
    lines = path.read_text().splitlines()
    path.write_text("\n".join(["9", *lines[1:]]) + "\n")  # claims 9 atoms, lists 8


def _empty(path):
    path.write_text("")


def _binary(path):
    path.write_bytes(b"\x00\xff\xfe garbage \x89HDF")


@pytest.mark.parametrize("make, expected", [
    (_no_forces, "frame 0: no reference forces"),
    (_nan_forces, "frame 0: reference forces must be finite, shape (8, 3)"),
    (_nan_energy, "frame 0: reference energy 'REF_energy' must be finite, got nan"),
    (_text_energy, "frame 0: reference energy 'REF_energy' must be a number, got 'high'"),
    (_atom_count_mismatch, "cannot read labelled structures"),
    (_empty, ""),
    (_binary, ""),
])
def test_bad_labels_are_one_line_exit_2(tmp_path, capsys, monkeypatch, make, expected):
    import driver.fit.run

    monkeypatch.setattr(driver.fit.run, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    labels = tmp_path / "labels.extxyz"
    make(labels)
    code = main(["fit", "--model", "chgnet", "--labels", str(labels), "--out", str(tmp_path / "c.yaml")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith(f"error: {labels}: ") and "Traceback" not in err
    assert expected in err


def test_missing_labels_file(tmp_path, capsys):
    code = main(["fit", "--model", "chgnet", "--labels", str(tmp_path / "none.extxyz"), "--out", str(tmp_path / "c.yaml")])
    assert code == 2 and "labels file not found" in capsys.readouterr().err
