"""Every MD ensemble with every model family, raw and corrected, and every other task kind with
every family, a few steps each through `driver run` on 8-atom silicon. The models are the session's
(conftest): `driver run`'s load_model is pointed at them, so each family loads once.

Nosé-Hoover and MTK ask the calculator for a force-consistent energy (ASE's conserved energy);
CHGNet's own calculator has none and crashed them on the raw job before the Potential layer."""

from __future__ import annotations

import json

import h5py
import pytest

from driver.cli import main
from tests.conftest import write_recipe

ENSEMBLES = ["nve", "nvt_langevin", "nvt_nose_hoover", "nvt_bussi", "npt_berendsen", "npt_mtk"]
FAMILIES = {  # family -> (its session model fixture, the recipe's model section)
    "chgnet": ("chgnet_model", lambda request: {"name": "chgnet"}),
    "m3gnet": ("m3gnet64_model", lambda request: {"name": "m3gnet", "dtype": "float64",
                                                  "models_dir": str(request.getfixturevalue("shared_models_dir"))}),
    "mace": ("mace64_model", lambda request: {"name": "mace-mp-0", "dtype": "float64",
                                              "checkpoint": str(request.getfixturevalue("small_mace_path"))}),
}
TASKS = {  # MD with every family is the ensemble matrix above
    "neb": {"kind": "neb", "vacancy_hop": {"species": "Si", "from": 0}, "n_images": 1, "relax_endpoints": False,
            "fmax_eV_A": 100, "max_steps": 2, "climb": False},
    "phonons": {"kind": "phonons", "supercell": [1, 1, 1], "band_points": 2, "mesh": [2, 2, 2]},
}


def run_with_session_model(request, monkeypatch, tmp_path, capsys, family: str, task: dict,
                           status: str = "completed", **sections):
    import driver.runner

    fixture, model_section = FAMILIES[family]
    model = request.getfixturevalue(fixture)
    monkeypatch.setattr(driver.runner, "load_model", lambda spec, local_rank=0, local_size=1: model)
    recipe = write_recipe(tmp_path, model=model_section(request), correction={"scale": 0.8}, compare=True,
                          task=task, **sections)
    code = main(["run", str(recipe)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert code == 0, captured.err
    jobs = json.loads((tmp_path / "out" / "summary.json").read_text())["jobs"]
    assert [job["status"] for job in jobs] == [status, status], jobs
    return jobs


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("ensemble", ENSEMBLES)
def test_every_ensemble_with_every_family_raw_and_corrected(request, monkeypatch, tmp_path, capsys, family, ensemble):
    task = {"kind": "md", "ensemble": ensemble, "timestep_fs": 1.0, "steps": 1, "temperature_K": 300, "seed": 2}
    jobs = run_with_session_model(request, monkeypatch, tmp_path, capsys, family, task,
                                  output={"write_every": 1, "flush_every": 1})
    assert [job["job"] for job in jobs] == ["raw-T300K", "corrected-T300K"]
    for job in jobs:
        with h5py.File(tmp_path / "out" / job["file"]) as f:
            assert f["particles/all/position/value"].shape[0] == 2  # step 0 and one step
            if ensemble in ("nvt_nose_hoover", "npt_mtk"):  # their own conserved energy, the quantity that crashed
                assert f["observables/conserved_energy/value"].shape[0] == 2


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("kind", sorted(TASKS))
def test_every_task_kind_with_every_family(request, monkeypatch, tmp_path, capsys, family, kind):
    # The small MACE's random weights put the Si vacancy hop's midpoint below its endpoints: no
    # barrier, which the NEB sanity check rightly calls suspect (a finished job, exit 0).
    status = "suspect" if (family, kind) == ("mace", "neb") else "completed"
    jobs = run_with_session_model(request, monkeypatch, tmp_path, capsys, family, TASKS[kind], status,
                                  output={"write_every": None, "flush_every": None})
    assert [job["job"] for job in jobs] == ["raw", "corrected"]
    if status == "suspect":
        assert all(job["suspect_reasons"][-1].startswith("no saddle found") for job in jobs)
