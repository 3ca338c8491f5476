"""A task result is declared once (driver.results): its fields' roles and units decide the summary
entry, the /results/<kind> group and what comes back from either; the job status follows from it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import h5py
import numpy as np
import pytest

from driver.errors import InputError
from driver.results import (
    FINISHED,
    SUCCEEDED,
    WITH_RESULTS,
    JobStatus,
    TaskResult,
    array,
    file_only,
    read_result,
    scalar,
)


@dataclass
class ToyResult(TaskResult):
    kind: ClassVar[str] = "toy"
    converged: bool = scalar()
    barrier_eV: float = scalar("eV")
    reasons: list[str] = scalar()
    drift: float | None = scalar("eV ps-1")  # None is a value here: null / "none"
    only_sometimes: int | None = scalar(optional=True)  # absent: the key is left out; None: null
    labels: list[str] | None = file_only(default=None)
    energies_eV: np.ndarray = array("eV")
    counts: np.ndarray = array(None)


def _toy(**changes) -> ToyResult:
    fields = dict(converged=True, barrier_eV=np.float64(0.25), reasons=["a", "b"], drift=None,
                  labels=["G", "X"], energies_eV=np.array([0.0, 0.25, 0.0]), counts=np.array([3, 4]))
    return ToyResult(**{**fields, **changes})


def test_summary_entry_is_json_ready_and_leaves_out_file_only_and_absent_optional_fields():
    scalars = _toy().scalars()
    assert scalars == {"converged": True, "barrier_eV": 0.25, "reasons": ["a", "b"], "drift": None}
    assert type(scalars["barrier_eV"]) is float and json.loads(json.dumps(scalars)) == scalars
    assert _toy(only_sometimes=2).scalars()["only_sometimes"] == 2
    assert _toy(only_sometimes=None).scalars()["only_sometimes"] is None  # present, undefined: null
    assert _toy().attributes() == {**scalars, "labels": ["G", "X"]}
    assert ToyResult.units() == {"barrier_eV": "eV", "drift": "eV ps-1", "energies_eV": "eV"}


def test_h5_round_trip_with_units(tmp_path):
    result = _toy(only_sometimes=7)
    with h5py.File(tmp_path / "job.h5", "w") as handle:
        result.to_h5(handle.create_group("results/toy"))
    with h5py.File(tmp_path / "job.h5", "r") as handle:
        group = handle["results/toy"]
        assert group["energies_eV"].attrs["unit"] == "eV" and "unit" not in group["counts"].attrs
        assert group.attrs["drift"] == "none" and group.attrs["reasons"] == '["a", "b"]'
    back = read_result(ToyResult, tmp_path / "job.h5")
    assert back.scalars() == result.scalars() and back.labels == result.labels
    np.testing.assert_array_equal(back.energies_eV, result.energies_eV)
    np.testing.assert_array_equal(back.counts, result.counts)


def test_a_group_missing_a_field_is_one_line_naming_the_file(tmp_path):
    with h5py.File(tmp_path / "old.h5", "w") as handle:
        group = handle.create_group("results/toy")
        group.attrs["converged"] = True
    with pytest.raises(InputError, match=r"old.h5: /results/toy lacks barrier_eV, reasons, drift"):
        read_result(ToyResult, tmp_path / "old.h5")


def test_from_summary_reads_the_scalars_of_an_entry_and_no_arrays():
    entry = {"job": "raw", "file": "raw.h5", "status": "completed", **_toy().scalars()}
    back = ToyResult.from_summary(entry)
    assert back.scalars() == _toy().scalars() and back.energies_eV is None


@pytest.mark.parametrize("changes, status", [({}, JobStatus.COMPLETED), ({"converged": False}, JobStatus.NOT_CONVERGED)])
def test_status_follows_from_the_result(changes, status):
    assert _toy(**changes).status() is status


def test_status_groups():
    assert SUCCEEDED < WITH_RESULTS < FINISHED
    assert JobStatus.NOT_CONVERGED in WITH_RESULTS and JobStatus.NOT_CONVERGED not in SUCCEEDED
    assert JobStatus.FAILED in FINISHED and JobStatus.INTERRUPTED not in FINISHED
    assert "completed" in SUCCEEDED and json.dumps(JobStatus.SUSPECT) == '"suspect"'  # files keep their text
