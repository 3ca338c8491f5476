"""Restart of every point-wise task (relax, EOS, elastic, phonons, single points): SIGKILL a real
driver process mid-job (nothing runs at exit), `--resume`, and compare with an uninterrupted run.
The slowed EMT family (tests/models/emt_family.py) makes the jobs long enough to kill."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from ase.build import bulk
from ase.io import write

from driver.points import resume_state
from tests.conftest import ROOT, write_recipe
from tests.sigkill import sigkill_once_stored

CLI = ("import sys; from driver.registry import register; "
       "from tests.models.emt_family import FAMILY, SLOW_FAMILY; register(FAMILY); register(SLOW_FAMILY); "
       "from driver.cli import main; sys.exit(main(sys.argv[1:]))")


def _driver(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def _recipe(folder: Path, task: dict, output: dict | None = None) -> Path:
    atoms = bulk("Cu", "fcc", a=3.62, cubic=True).repeat((1, 1, 2))
    atoms.rattle(0.03, seed=3)
    write(folder / "Cu.extxyz", atoms)
    frames = []
    for seed in range(24):  # frames to re-score, with EMT labels to compare against
        frame = atoms.copy()
        frame.rattle(0.05, seed=seed)
        frames.append(frame)
    write(folder / "frames.extxyz", frames)
    task = {**task, "frames": str(folder / "frames.extxyz")} if task["kind"] == "single_point" else task
    return write_recipe(folder, structure={"file": str(folder / "Cu.extxyz")},
                        model={"name": "emt_slow", "dtype": "float64"}, correction={"scale": 0.8}, compare=True,
                        task=task, output=output or {})


CASES = {
    "relax": ({"kind": "relax", "cell": True, "fmax_eV_A": 0.01, "max_steps": 300}, {"checkpoint_every": 4}, 8),
    "eos": ({"kind": "eos", "n_points": 7, "strain": 0.02, "fmax_eV_A": 0.05}, {}, 2),
    "elastic": ({"kind": "elastic", "relax": {"fmax_eV_A": 0.05}, "normal_strains": [-0.01, 0.01], "shear_strains": [-0.01, 0.01],
                 "fmax_eV_A": 0.05},
                {}, 4),
    "phonons": ({"kind": "phonons", "supercell": [1, 1, 1], "batch_size": 4, "batched": False}, {}, 4),
    "single_point": ({"kind": "single_point", "chunk_size": 2}, {}, 3),
}


def _results(path: Path, kind: str) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        group = f[f"results/{kind}"]
        return {key: group[key][()] for key in group}


@pytest.mark.parametrize("kind", list(CASES))
def test_sigkill_then_resume_matches_the_uninterrupted_run(tmp_path, kind):
    task, output, kill_at = CASES[kind]
    recipe = _recipe(tmp_path, task, output)
    whole = _driver("-q", "run", str(recipe), "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr

    killed_dir = tmp_path / "killed"
    h5 = killed_dir / "raw.h5"
    sigkill_once_stored([sys.executable, "-c", CLI, "-q", "run", str(recipe), "--out", str(killed_dir)], h5,
                        tmp_path / "peek.h5", kill_at, resume_state, timeout_s=180)
    with h5py.File(h5, "r") as f:
        assert f.attrs["status"] == "running"
        state = resume_state(f)
    assert state is not None and state.step >= kill_at
    assert not (killed_dir / "summary.json").exists()

    resumed = _driver("run", str(recipe), "--out", str(killed_dir), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from the checkpoint at step {state.step}" in resumed.stderr
    if kind != "relax":  # a point-wise job recomputes only what it had not stored
        assert "points already stored (--resume)" in resumed.stderr
    whole_jobs = json.loads((tmp_path / "whole" / "summary.json").read_text())["jobs"]
    resumed_jobs = json.loads((killed_dir / "summary.json").read_text())["jobs"]
    assert [j["status"] for j in resumed_jobs] == ["completed", "completed"]
    for name in ("raw.h5", "corrected.h5"):
        a, b = _results(tmp_path / "whole" / name, kind), _results(killed_dir / name, kind)
        assert a.keys() == b.keys()
        for key in a:  # relax too: its snapshot holds the optimizer's state and the cell filter's reference
            np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    if kind == "relax":
        assert resumed_jobs[0]["final_energy_eV"] == whole_jobs[0]["final_energy_eV"]
