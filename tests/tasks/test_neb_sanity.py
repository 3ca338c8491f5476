"""NEB sanity (issue #17): a band that only climbs, an endpoint that relaxed away from its site,
or two endpoints that are one minimum make the job `suspect`; a symmetric vacancy hop does not.
EMT fcc Cu for speed, CHGNet Li2O (11 atoms) for a real model."""

from __future__ import annotations

import json
import logging
import re

import h5py
import numpy as np
import pytest
from ase.build import bulk
from ase.io import read, write

from driver.cli import main
from driver.tasks.neb_endpoints import VacancyHop, vacancy_hop_endpoints
from driver.tasks.neb_sanity import interior_maxima, profile_reasons
from tests.conftest import LI2O_HOP, write_recipe

NO_SADDLE = "no saddle found (the energy profile has no interior maximum)"
EMT = {"name": "emt", "dtype": "float64"}


def _jobs(out) -> dict[str, dict]:
    return {job["job"]: job for job in json.loads((out / "summary.json").read_text())["jobs"]}


def _part_way(host, species: str, site: int, fraction: float, folder):
    """Initial: `host` with a vacancy; final: its neighbour moved `fraction` of the way into it
    (short of the saddle at 0.5), so the band between them only climbs. Written as two files."""
    initial, final, info = vacancy_hop_endpoints(host, VacancyHop(species=species, **{"from": site}))
    atom = info["hop_atom"]
    final.positions[atom] = initial.positions[atom] + fraction * (final.positions[atom] - initial.positions[atom])
    write(folder / "initial.extxyz", initial)
    write(folder / "final.extxyz", final)
    return folder / "initial.extxyz", folder / "final.extxyz"


@pytest.fixture
def cu(tmp_path):
    host = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)  # 32 atoms; 31 with the vacancy
    write(tmp_path / "Cu.extxyz", host)
    return host


@pytest.mark.parametrize("energies, maxima", [
    ([0, 0.2, 0.5, 0.2, 0], [2]),
    ([0, 0.1, 0.2, 0.3, 0.4], []),  # climbs all the way
    ([0, 0.3, 0.3, 0.3, 0.1], [1]),  # a flat top is one maximum
    ([0, 0.2, 0.2, 0.4], []),  # a flat step on the way up is not
    ([0, 0.2, 0.1, 0.3, 0.0], [1, 3]),
])
def test_interior_maxima(energies, maxima):
    assert interior_maxima(energies) == maxima


def test_profile_reasons():
    assert profile_reasons([0, 0.2, 0.5, 0.2, 0]) == []
    assert profile_reasons([0, 0.1, 0.2, 0.3, 0.4]) == ["highest image is the final endpoint", NO_SADDLE]
    assert profile_reasons([0.5, 0.1, 0.3, 0.1, 0]) == ["highest image is the initial endpoint"]


def test_symmetric_vacancy_hop_is_not_suspect(tmp_path, cu, emt_family, caplog):
    recipe = write_recipe(tmp_path, structure={"file": str(tmp_path / "Cu.extxyz")}, model=EMT,
                          task={"kind": "neb", "vacancy_hop": {"species": "Cu", "from": 1}, "n_images": 3,
                                "max_steps": 200})
    caplog.set_level(logging.INFO, logger="driver")
    assert main(["run", str(recipe)]) == 0
    job = _jobs(tmp_path / "out")["raw"]
    assert job["status"] == "completed" and job["suspect"] is False and job["suspect_reasons"] == []
    assert job["barrier_eV"] > 0.3 and job["saddle_image"] == 2
    # Progress: one line per tenth of max_steps (every 20 iterations), with max force and barrier,
    # then a closing line.
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("raw NEB: ")]
    pattern = re.compile(r"raw NEB: iteration (\d+)/200 \(\d+%\) max force [\d.]+ eV/Å, barrier [-\d.]+ eV  ETA ")
    steps = [int(m.group(1)) for m in map(pattern.match, lines) if m]
    assert steps[:2] == [0, 20] and len(steps) == job["iterations"] // 20 + 1
    assert re.match(r"raw NEB: done, \d+ iterations in \d+s \(converged; max force 0\.0[0-4]\d eV/Å", lines[-1])


def test_band_that_only_climbs_is_no_saddle(tmp_path, cu, emt_family, capsys, caplog):
    """The issue's case: endpoints that are not equivalent (the final one is part-way to the saddle,
    not relaxed): the band rises monotonically, the barrier is just the energy difference."""
    initial, final = _part_way(cu, "Cu", 1, 0.4, tmp_path)
    # Without a climbing image the band converges (a climbing image climbs onto the final endpoint).
    recipe = write_recipe(tmp_path, structure={"file": str(initial)}, model=EMT, correction={"scale": 0.8},
                          compare=True, task={"kind": "neb", "final": str(final), "relax_endpoints": False,
                                              "climb": False, "n_images": 3, "max_steps": 200})
    assert main(["run", str(recipe)]) == 0  # finished, with a warning: exit 0
    printed = capsys.readouterr()
    jobs = _jobs(tmp_path / "out")
    for name in ("raw", "corrected"):
        job = jobs[name]
        assert job["status"] == "suspect" and job["converged"] and job["suspect"] is True
        assert job["suspect_reasons"] == ["highest image is the final endpoint", NO_SADDLE]
        assert job["saddle_image"] == 4
        with h5py.File(tmp_path / "out" / f"{name}.h5") as f:
            assert f.attrs["status"] == "suspect"
            energies = f["results/neb/image_energies_eV"][()]
        assert np.all(np.diff(energies) > 0)  # it really only climbs
    assert f"WARNING: raw: NEB result suspect: {NO_SADDLE}" in caplog.messages
    report = [line for line in printed.out.splitlines() if "raw.h5" in line][0]
    assert f"SUSPECT: highest image is the final endpoint; {NO_SADDLE}" in report
    assert "SUSPECT band (raw, corrected)" in printed.out
    assert main(["compare", str(tmp_path / "out")]) == 0
    assert "note: raw: NEB result suspect: highest image" in capsys.readouterr().out
    # --resume takes a suspect job as finished.
    caplog.clear()
    caplog.set_level(logging.INFO, logger="driver")
    assert main(["run", str(recipe), "--resume"]) == 0
    assert "raw: already suspect; skipped (--resume)" in caplog.messages
    assert "SUSPECT: highest image" in capsys.readouterr().out  # reported from the entry in its file


def test_endpoint_that_relaxes_away_is_flagged(tmp_path, cu, emt_family):
    """The same part-way final endpoint, now relaxed: its hopping atom falls back to its own site
    (the whole 40% it was moved), so both endpoints are one minimum."""
    initial, final = _part_way(cu, "Cu", 1, 0.4, tmp_path)
    recipe = write_recipe(tmp_path, structure={"file": str(initial)}, model=EMT,
                          task={"kind": "neb", "final": str(final), "n_images": 3, "max_steps": 100})
    assert main(["run", str(recipe)]) == 0
    job = _jobs(tmp_path / "out")["raw"]
    assert job["status"] == "suspect"
    reasons = job["suspect_reasons"]
    hop = 0.4 * 3.6 / np.sqrt(2)
    shift = next(r for r in reasons if r.startswith("relaxing the final endpoint moved the hopping atom"))
    assert f"of the {hop:.2f} Å hop (endpoint_max_shift_fraction 0.3)" in shift
    # Back to (near) its own site, which the vacancy next to it shifts a little when relaxed.
    assert 0.85 * hop < float(re.search(r"by ([\d.]+) Å", shift).group(1)) < 1.05 * hop
    assert not any(r.startswith("relaxing the initial endpoint") for r in reasons)
    assert any(r.startswith("both endpoints are the same minimum") for r in reasons)


def test_chgnet_band_that_only_climbs_is_no_saddle(tmp_path, capsys, li2o_cell):
    """CHGNet on Li2O (23 atoms): a Li 40% of the way into the neighbouring vacancy, not relaxed."""
    initial, final = _part_way(read(li2o_cell), "Li", LI2O_HOP["from"], 0.4, tmp_path)
    recipe = write_recipe(tmp_path, structure={"file": str(initial)},
                          task={"kind": "neb", "final": str(final), "relax_endpoints": False, "climb": False,
                                "n_images": 3, "fmax_eV_A": 0.1, "max_steps": 60})
    assert main(["run", str(recipe)]) == 0
    job = _jobs(tmp_path / "out")["raw"]
    assert job["status"] == "suspect" and job["converged"]
    assert job["suspect_reasons"] == ["highest image is the final endpoint", NO_SADDLE]
    assert job["saddle_image"] == 4 and job["barrier_eV"] > 0.1
