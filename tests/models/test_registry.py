"""One registry entry per family: a family added as one module (tests/models/emt_family.py) is
known to recipes, the CLI, `driver models` and provenance, and runs every task kind."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from driver.cli import build_parser, main
from driver.models.catalog import describe_models
from driver.provenance import tracked_packages
from driver.registry import families, family_names
from tests.conftest import emt_recipe


def test_builtin_families_and_their_entries():
    assert family_names()[:3] == ("chgnet", "m3gnet", "mace-mp-0")
    for name, entry in families().items():
        assert entry.name == name and entry.dtypes and entry.load is not None
    assert families()["chgnet"].unsupported_dtype("float64") == \
        "model.dtype: chgnet runs in float32 only, got 'float64'"
    assert {"chgnet", "matgl", "mace-torch"} <= set(tracked_packages())


def test_an_added_family_is_known_everywhere(emt_family, capsys):
    assert "emt" in family_names()
    assert "emt" in describe_models()
    fit = build_parser().parse_args(["fit", "--model", "emt", "--family", "emt", "--labels", "x"])
    assert fit.family == "emt"
    assert main(["models"]) == 0 and "ase's effective-medium theory" in capsys.readouterr().out.lower()


def test_an_unregistered_family_is_an_unknown_model(tmp_path, capsys):
    recipe = emt_recipe(tmp_path, {"kind": "md", "ensemble": "nve", "timestep_fs": 2.0, "steps": 4,
                                   "temperature_K": 300})
    assert main(["validate", str(recipe)]) == 2
    assert "model.name: unknown model 'emt'" in capsys.readouterr().err


@pytest.mark.parametrize("ensemble", ["nve", "nvt_nose_hoover", "npt_mtk"])
def test_the_added_family_runs_md_raw_and_corrected(emt_family, tmp_path, ensemble, capsys):
    recipe = emt_recipe(tmp_path, {"kind": "md", "ensemble": ensemble, "timestep_fs": 2.0, "steps": 6,
                                   "temperature_K": 300, "relax": {"fmax_eV_A": 0.05}})
    assert main(["run", str(recipe)]) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [j["status"] for j in summary["jobs"]] == ["completed", "completed"]
    assert summary["model_family"] == "emt" and summary["jobs"][1]["softening_scale"] == 0.8
    with h5py.File(tmp_path / "out" / "corrected-T300K.h5") as f:
        assert f["parameters"].attrs["model_family"] == "emt"
        assert f["particles/all/position/value"].shape[0] == 4  # steps 0, 2, 4, 6


def test_the_added_family_runs_neb_with_barrier_over_s(emt_family, tmp_path, capsys):
    recipe = emt_recipe(tmp_path, {"kind": "neb", "vacancy_hop": {"species": "Cu", "from": 0},
                                   "n_images": 3, "fmax_eV_A": 0.05, "max_steps": 200, "climb": True})
    assert main(["run", str(recipe)]) == 0, capsys.readouterr().err
    jobs = {j["job"]: j for j in json.loads((tmp_path / "out" / "summary.json").read_text())["jobs"]}
    assert jobs["raw"]["converged"] and jobs["corrected"]["converged"]
    # Two optimisations to fmax on surfaces 1/s apart: the same saddle within the tolerance.
    assert jobs["corrected"]["barrier_eV"] / jobs["raw"]["barrier_eV"] == pytest.approx(1 / 0.8, rel=0.02)


def test_the_added_family_runs_phonons_with_frequencies_over_sqrt_s(emt_family, tmp_path, capsys):
    recipe = emt_recipe(tmp_path, {"kind": "phonons", "supercell": [1, 1, 1], "mesh": [4, 4, 4],
                                   "band_points": 5})
    assert main(["run", str(recipe)]) == 0, capsys.readouterr().err
    jobs = {j["job"]: j for j in json.loads((tmp_path / "out" / "summary.json").read_text())["jobs"]}
    raw, corrected = np.array(jobs["raw"]["frequencies_THz"]), np.array(jobs["corrected"]["frequencies_THz"])
    # The three acoustic Γ modes are zero up to round-off, whose sign is not scaled by s: both near 0.
    acoustic = np.abs(raw) < 0.1
    assert acoustic.sum() == 3 and np.all(np.abs(corrected[acoustic]) < 1e-2)
    np.testing.assert_allclose(corrected[~acoustic], raw[~acoustic] / np.sqrt(0.8), rtol=1e-6)
