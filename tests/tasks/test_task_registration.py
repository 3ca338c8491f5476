"""Adding a task kind is its own module plus one registration line (CONTRIBUTING.md): the
test-only `max_force` kind (tests/tasks/max_force_task.py) runs from a recipe and shows up in
summary.json, its job files (with units), the run report, `driver compare` and report.md, without
an edit anywhere else in the driver."""

from __future__ import annotations

import json

import h5py
import pytest

from driver import tasks
from driver.cli import main
from tests.conftest import emt_recipe
from tests.tasks.max_force_task import TASK


@pytest.fixture
def max_force_kind():
    tasks.register(TASK)  # the one line
    yield TASK
    tasks.unregister(TASK.kind)


def test_a_registered_task_kind_runs_and_reports_everywhere(max_force_kind, emt_family, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["validate", str(emt_recipe(tmp_path, {"kind": "max_force"}))]) == 0
    assert main(["run", str(emt_recipe(tmp_path, {"kind": "max_force"})), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    jobs = {job["job"]: job for job in json.loads((out / "summary.json").read_text())["jobs"]}
    assert set(jobs) == {"raw", "corrected"} and all(job["status"] == "completed" for job in jobs.values())
    raw, corrected = jobs["raw"], jobs["corrected"]
    # The scalar correction's exact identity, through every layer: F' = F/s.
    assert corrected["max_force_eV_A"] == pytest.approx(raw["max_force_eV_A"] / 0.8, rel=1e-12)
    with h5py.File(out / "raw.h5") as handle:
        group = handle["results/max_force"]
        assert group["forces_eV_A"].shape == (32, 3) and group["forces_eV_A"].attrs["unit"] == "eV Angstrom-1"
        assert group.attrs["max_force_eV_A"] == pytest.approx(raw["max_force_eV_A"])
    assert "max |F|" in printed and "max_force: corrected/raw = 1.250000 (exact for the scalar correction" in printed

    assert main(["compare", str(out)]) == 0
    compared = capsys.readouterr().out
    assert "max_force:" in compared and "max_force: corrected/raw = 1.250000" in compared
    report = (out / "report.md").read_text()
    assert "## max_force:" in report and "- max_force: corrected/raw = 1.250000" in report


def test_an_unregistered_kind_is_refused_by_name(emt_family, tmp_path, capsys):
    assert main(["validate", str(emt_recipe(tmp_path, {"kind": "max_force"}))]) == 2
    assert "task.kind: must be one of" in capsys.readouterr().err
