"""ensemble npt_mtk_aniso: ASE's full-cell MTKNPT, where all nine cell components move."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from driver.cli import main
from driver.output import H5MDWriter
from driver.tasks.md import MDTask, initialize_velocities, run_md
from tests.conftest import write_recipe

STRAIN = np.array([[1.04, 0.0, 0.0], [0.02, 1.0, 0.0], [0.0, 0.0, 0.97]])  # stretch, shear, squeeze


def _strained_cu(tmp_path, ensemble: str, steps: int) -> dict[str, np.ndarray]:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.set_cell(atoms.cell[:] @ STRAIN, scale_atoms=True)
    atoms.calc = EMT()
    task = MDTask(kind="md", ensemble=ensemble, timestep_fs=2.0, steps=steps, temperature_K=100, tdamp_fs=50.0,
                  pdamp_fs=200.0, pressure_GPa=0.0, seed=1)
    initialize_velocities(atoms, 100, task.seed)
    writer = H5MDWriter(tmp_path / f"{ensemble}.h5", atoms, provenance={}, flush_every=50)
    run_md(atoms, task, 100.0, writer, write_every=5)
    writer.close("completed")
    with h5py.File(tmp_path / f"{ensemble}.h5", "r") as f:
        return {"edges": f["particles/all/box/edges/value"][:], "pressure": f["observables/pressure/value"][:],
                "volume": f["observables/volume/value"][:]}


def _emt_equilibrium_volume_per_atom() -> float:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.calc = EMT()
    BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-4)
    return atoms.get_volume() / len(atoms)


def _gamma_deg(cell: np.ndarray) -> float:
    a, b = cell[0], cell[1]
    return float(np.degrees(np.arccos(a @ b / np.linalg.norm(a) / np.linalg.norm(b))))


def test_full_cell_relaxes_a_strained_crystal_towards_emt_equilibrium(tmp_path):
    """EMT Cu (32 atoms) stretched 4 % along a, squeezed 3 % along c, sheared by 2 %, at 0 GPa and
    100 K for 1 ps: under the full-cell barostat the cell becomes cubic again at EMT's own
    volume and the pressure averages near zero; the isotropic barostat can only scale the
    strained shape (edge ratios and angles stay)."""
    run = _strained_cu(tmp_path, "npt_mtk_aniso", 500)
    lengths = np.linalg.norm(run["edges"], axis=2)
    half = len(lengths) // 2
    assert np.ptp(lengths[0]) > 0.45 and abs(_gamma_deg(run["edges"][0]) - 90) > 1.0  # the strained start
    assert np.ptp(lengths[half:].mean(axis=0)) < 0.06  # a = b = c again, within 1 %
    assert abs(np.mean([_gamma_deg(cell) for cell in run["edges"][half:]]) - 90) < 0.4
    assert run["volume"][half:].mean() / 32 == pytest.approx(_emt_equilibrium_volume_per_atom(), rel=0.015)
    assert run["pressure"][0] < -1.5 and abs(run["pressure"][half:].mean()) < 0.5  # GPa

    isotropic = _strained_cu(tmp_path, "npt_mtk", 50)
    ratios = np.linalg.norm(isotropic["edges"], axis=2)
    np.testing.assert_allclose(ratios / ratios[:, :1], np.tile(ratios[0] / ratios[0, 0], (len(ratios), 1)), rtol=1e-9)
    assert not np.allclose(ratios[0], ratios[-1])  # it did rescale the cell


def test_full_cell_npt_runs_with_a_real_model(tmp_path, capsys):
    """CHGNet, 8 Si atoms under 2 GPa: stress reaches the barostat, the cell changes shape, volume,
    pressure and the conserved energy are stored, and --resume's checkpoint holds the cell momenta."""
    recipe = write_recipe(tmp_path, task={"ensemble": "npt_mtk_aniso", "steps": 10, "pressure_GPa": 2.0,
                                          "pdamp_fs": 50.0}, output={"checkpoint_every": 5})
    assert main(["-q", "run", str(recipe)]) == 0
    with h5py.File(tmp_path / "out" / "raw-T500K.h5", "r") as f:
        assert {"volume", "pressure", "conserved_energy"} <= set(f["observables"])
        edges = f["particles/all/box/edges/value"][:]
        assert "integrator/_p_g" in f["checkpoint/a"] or "integrator/_p_g" in f["checkpoint/b"]
    lengths = np.linalg.norm(edges, axis=2)
    assert not np.allclose(edges[0], edges[-1])
    assert np.ptp(lengths[-1] / lengths[0]) > 1e-6  # not a uniform scaling: each edge moves on its own
