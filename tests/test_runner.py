"""The runner hands each job its own potential and prepares each variant on its own surface."""

from __future__ import annotations

import json
import signal

import h5py
import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT

from driver.cli import main
from driver.correction import SofteningCorrection, SofteningScale
from driver.errors import ResourceError, is_out_of_memory
from driver.potential import CalculatorPotential
from driver.runner import prepare_start, variant_potential
from driver.tasks import task_for
from driver.tasks.md import MDTask
from tests.conftest import emt_recipe


def _rattled_cu():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.1, seed=2)
    return atoms


def test_variant_potential():
    base = CalculatorPotential(EMT())
    scale = SofteningScale(0.5, "recipe")
    assert variant_potential("raw", base, scale, -1.0) is base
    corrected = variant_potential("corrected", base, scale, -1.0)
    assert isinstance(corrected, SofteningCorrection) and corrected.base is base
    assert corrected.softening_scale == 0.5 and corrected.reference_energy_eV == -1.0


def test_each_variant_relaxes_on_its_own_surface():
    """With s = 0.5 the corrected forces are twice the raw ones, so relaxing the corrected PES to
    fmax leaves raw forces below s * fmax: the relaxation ran on the job's own surface."""
    base, scale, fmax = CalculatorPotential(EMT()), SofteningScale(0.5, "recipe"), 0.05
    spec = MDTask(kind="md", timestep_fs=1, steps=1, temperature_K=300, relax={"fmax_eV_A": fmax, "max_steps": 500})
    task = task_for("md")
    raw = prepare_start("raw", _rattled_cu(), base, scale, task, spec)
    corrected = prepare_start("corrected", _rattled_cu(), base, scale, task, spec)
    raw_force = lambda atoms: np.linalg.norm(base.evaluate([atoms])[0].forces, axis=1).max()  # noqa: E731
    assert raw.prepared.info["prerelax_converged"] and corrected.prepared.info["prerelax_converged"]
    assert fmax * scale.value < raw_force(raw.prepared.start) <= fmax
    assert raw_force(corrected.prepared.start) <= fmax * scale.value
    # E0 is the raw energy at the variant's own relaxed start, and the start carries no calculator.
    assert corrected.reference_energy_eV == base.energy(corrected.prepared.start)
    assert corrected.prepared.start.calc is None


def test_out_of_memory_is_told_apart():
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_out_of_memory_in_a_job_exits_1_with_its_message(emt_family, tmp_path, monkeypatch, capsys):
    def exhausted(self, *args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    recipe = emt_recipe(tmp_path, {"kind": "phonons", "supercell": [1, 1, 1], "mesh": [2, 2, 2]})
    monkeypatch.setattr("driver.tasks.phonons.compute_force_sets", exhausted)
    assert main(["run", str(recipe)]) == 1
    err = capsys.readouterr().err
    assert "raw: out of memory on cpu (CUDA out of memory. Tried to allocate 20.00 GiB)" in err
    assert "Traceback" not in err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["jobs"][0]["status"] == "failed" and "out of memory" in summary["jobs"][0]["error"]


def test_the_cli_restores_the_callers_signal_handlers(emt_family, tmp_path, capsys):
    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        recipe = emt_recipe(tmp_path, {"kind": "md", "ensemble": "nve", "timestep_fs": 2.0, "steps": 2,
                                       "temperature_K": 300})
        assert main(["run", str(recipe)]) == 0
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_resource_errors_exit_1():
    assert ResourceError("x").exit_code == 1


def test_nose_hoover_runs_with_the_raw_default_model(tmp_path, capsys):
    """It crashed with PropertyNotImplementedError (free_energy) through CHGNet's own calculator."""
    from tests.conftest import write_recipe

    recipe = write_recipe(tmp_path, task={"kind": "md", "ensemble": "nvt_nose_hoover", "timestep_fs": 2.0,
                                          "steps": 4, "temperature_K": 500})
    assert main(["run", str(recipe)]) == 0, capsys.readouterr().err
    with h5py.File(tmp_path / "out" / "raw-T500K.h5") as f:  # the integrator's own conserved energy
        assert f["observables/conserved_energy/value"].shape == (3,)
