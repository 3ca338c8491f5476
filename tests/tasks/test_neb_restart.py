"""NEB restart: a band checkpointed in its job file continues under `driver run --resume` to the
band an uninterrupted run reaches, after SIGTERM (in-process, FIRE and BFGS) and after SIGKILL
(a real process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
from ase.build import bulk
from ase.io import write

from driver.checkpoint import read_latest
from driver.cli import EXIT_INTERRUPTED, main
from driver.progress import Progress
from tests.conftest import LI2O_HOP, ROOT, write_recipe
from tests.sigkill import sigkill_once_stored

EMT = {"name": "emt", "dtype": "float64"}
TASK = {"kind": "neb", "vacancy_hop": {"species": "Cu", "from": 1}, "n_images": 3, "fmax_eV_A": 0.005,
        "max_steps": 300, "checkpoint_every": 4}


@pytest.fixture
def cu_recipe(tmp_path):
    def make(**task):
        write(tmp_path / "Cu.extxyz", bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2))
        return write_recipe(tmp_path, structure={"file": str(tmp_path / "Cu.extxyz")}, model=EMT,
                            task={**TASK, **task})
    return make


def _result(out) -> tuple[dict, dict]:
    with h5py.File(out / "raw.h5", "r") as f:
        arrays = {key: f["results/neb"][key][()] for key in f["results/neb"]}
    return json.loads((out / "summary.json").read_text())["jobs"][0], arrays


class _StopAt(Progress):
    """Sends this process SIGTERM when the band reaches iteration STOP, as Slurm would."""

    STOP = 15

    def update(self, done: int, details: str = "") -> None:
        super().update(done, details)
        if done == self.STOP:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("optimizer", ["fire", "bfgs"])
def test_sigterm_then_resume_gives_the_uninterrupted_band(tmp_path, cu_recipe, emt_family, monkeypatch, optimizer):
    recipe = cu_recipe(optimizer=optimizer)
    assert main(["run", str(recipe), "--out", str(tmp_path / "whole")]) == 0
    with monkeypatch.context() as patch:
        patch.setattr("driver.tasks.neb.Progress", _StopAt)
        assert main(["run", str(recipe), "--out", str(tmp_path / "split")]) == EXIT_INTERRUPTED
    with h5py.File(tmp_path / "split" / "raw.h5", "r") as f:
        assert f.attrs["status"] == "interrupted" and read_latest(f).step == _StopAt.STOP
    assert main(["run", str(recipe), "--out", str(tmp_path / "split"), "--resume"]) == 0
    (whole, whole_arrays), (split, split_arrays) = _result(tmp_path / "whole"), _result(tmp_path / "split")
    assert whole["iterations"] > _StopAt.STOP + 10  # the stop came well before convergence
    assert split["status"] == whole["status"] == "completed" and split["iterations"] == whole["iterations"]
    assert split["barrier_eV"] == pytest.approx(whole["barrier_eV"], abs=1e-10)
    for key in ("image_positions_A", "iteration_energies_eV", "iteration_max_force_eV_A"):
        np.testing.assert_allclose(split_arrays[key], whole_arrays[key], rtol=0, atol=1e-10, err_msg=key)
    # The resume re-evaluates the endpoints and the stored band once: two model calls more.
    assert split["model_calls"] == whole["model_calls"] + 2
    with h5py.File(tmp_path / "split" / "raw.h5", "r") as f:
        assert f["particles/all/position/value"].shape[0] == 1  # the start, written once


def test_ode_band_restarts_from_the_stored_band(tmp_path, cu_recipe, emt_family, monkeypatch):
    """ASE's ODE optimiser cannot be stored: it restarts from the checkpointed band and reaches the
    same converged barrier (to the fmax tolerance), not the same iterations."""
    recipe = cu_recipe(optimizer="ode")
    assert main(["run", str(recipe), "--out", str(tmp_path / "whole")]) == 0
    with monkeypatch.context() as patch:
        patch.setattr(_StopAt, "STOP", 5)
        patch.setattr("driver.tasks.neb.Progress", _StopAt)
        assert main(["run", str(recipe), "--out", str(tmp_path / "split")]) == EXIT_INTERRUPTED
    assert main(["run", str(recipe), "--out", str(tmp_path / "split"), "--resume"]) == 0
    (whole, _), (split, arrays) = _result(tmp_path / "whole"), _result(tmp_path / "split")
    assert split["status"] == "completed" and split["barrier_eV"] == pytest.approx(whole["barrier_eV"], abs=1e-4)
    assert arrays["iteration_energies_eV"].shape[0] == split["iterations"] > 5  # history kept across the stop


# The EMT family registered in the child process (its ~60 ms per band iteration leave time to kill it).
_CHILD = """
import sys
from driver.registry import register
from tests.models.emt_family import FAMILY
register(FAMILY)
from driver.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _child(*args: str) -> list[str]:
    return [sys.executable, "-c", _CHILD, *args]


def test_sigkill_then_resume_gives_the_uninterrupted_band(tmp_path, cu_recipe, emt_family):
    recipe = cu_recipe(relax_endpoints=False)  # the band is the point; unrelaxed endpoints save time
    assert main(["-q", "run", str(recipe), "--out", str(tmp_path / "whole")]) == 0
    h5 = tmp_path / "killed" / "raw.h5"
    sigkill_once_stored(_child("-q", "run", str(recipe), "--out", str(tmp_path / "killed")), h5,
                        tmp_path / "peek.h5", 8, read_latest, timeout_s=60)
    with h5py.File(h5, "r") as f:
        assert f.attrs["status"] == "running"
        step = read_latest(f).step
    resumed = subprocess.run(_child("run", str(recipe), "--out", str(tmp_path / "killed"), "--resume"),
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"raw: resuming from the checkpoint at step {step}" in resumed.stderr
    (whole, whole_arrays), (killed, killed_arrays) = _result(tmp_path / "whole"), _result(tmp_path / "killed")
    assert whole["iterations"] > step + 10 and killed["iterations"] == whole["iterations"]
    assert killed["barrier_eV"] == pytest.approx(whole["barrier_eV"], abs=1e-10)
    np.testing.assert_allclose(killed_arrays["image_positions_A"], whole_arrays["image_positions_A"], rtol=0,
                               atol=1e-10)


@pytest.mark.parametrize("name", ["FIRE", "BFGS"])
def test_every_optimizer_attribute_that_changes_is_stored(name):
    """Fails when ASE's optimizer gains state that driver.optimizer_state.OPTIMIZER_STATE does not store."""
    import copy

    from ase import optimize
    from ase.calculators.emt import EMT

    from driver.optimizer_state import OPTIMIZER_STATE

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.1, seed=1)
    atoms.calc = EMT()
    optimizer = getattr(optimize, name)(atoms, logfile=None)
    optimizer.run(fmax=1e-9, steps=4)
    skip = {"optimizable", "atoms", "observers", "logfile", "trajectory", "comm", "_master"}
    before = {key: copy.deepcopy(value) for key, value in vars(optimizer).items() if key not in skip}
    optimizer.run(fmax=1e-9, steps=4)

    def comparable(value):
        return value.hessian if hasattr(value, "hessian") else value

    changed = {key for key, value in before.items()
               if not np.array_equal(np.asarray(comparable(value)), np.asarray(comparable(vars(optimizer)[key])))}
    # nsteps is the checkpoint's step; max_steps is set by each run; BFGS's H0 is its Hessian's
    # starting array, updated in place (`state` holds the same array: stored as "hessian").
    known = set(OPTIMIZER_STATE[name]) | {"nsteps", "max_steps", "H0", "state"}
    assert changed and changed <= known, changed - known


def test_chgnet_band_resumes_after_sigterm(tmp_path, monkeypatch, li2o_cell):
    """A real model: CHGNet on Li2O (23 atoms), a band stopped at iteration 4 of 10 and resumed,
    against the same 10 iterations uninterrupted (both not converged: exit 1)."""
    recipe = write_recipe(tmp_path, structure={"file": str(li2o_cell)},
                          task={"kind": "neb", "vacancy_hop": LI2O_HOP, "n_images": 3, "batched": False,
                                "relax_endpoints": False, "fmax_eV_A": 0.001, "max_steps": 10,
                                "checkpoint_every": 3})
    assert main(["run", str(recipe), "--out", str(tmp_path / "whole")]) == 1
    with monkeypatch.context() as patch:
        patch.setattr(_StopAt, "STOP", 4)
        patch.setattr("driver.tasks.neb.Progress", _StopAt)
        assert main(["run", str(recipe), "--out", str(tmp_path / "split")]) == EXIT_INTERRUPTED
    assert main(["run", str(recipe), "--out", str(tmp_path / "split"), "--resume"]) == 1
    (whole, whole_arrays), (split, split_arrays) = _result(tmp_path / "whole"), _result(tmp_path / "split")
    assert split["status"] == whole["status"] == "not converged" and split["iterations"] == whole["iterations"] == 11
    assert split["barrier_eV"] == pytest.approx(whole["barrier_eV"], abs=1e-6)
    np.testing.assert_allclose(split_arrays["image_positions_A"], whole_arrays["image_positions_A"], atol=1e-6)
