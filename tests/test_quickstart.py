"""The README's promise: the quick-start recipe runs and says where results are and what they say."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np

from driver.cli import main
from tests.conftest import ROOT


def test_quickstart_recipe_end_to_end(tmp_path, capsys):
    out = tmp_path / "quickstart"
    assert main(["run", str(ROOT / "recipes" / "quickstart.yaml"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"Results in {out}/" in printed
    assert "corrected/raw RMS displacement" in printed

    summary = json.loads((out / "summary.json").read_text())
    jobs = {job["job"]: job for job in summary["jobs"]}
    assert set(jobs) == {"raw-T1000K", "corrected-T1000K"}
    assert all(job["status"] == "completed" for job in jobs.values())
    assert jobs["corrected-T1000K"]["softening_scale"] == 0.627
    assert summary["model_family"] == "chgnet" and summary["model_device"] == "cpu"

    with h5py.File(out / "raw-T1000K.h5", "r") as raw, h5py.File(out / "corrected-T1000K.h5", "r") as corrected:
        # compare: true means identical starting positions and velocities; only the PES differs.
        for name in ("position", "velocity"):
            np.testing.assert_array_equal(raw[f"particles/all/{name}/value"][0], corrected[f"particles/all/{name}/value"][0])
        assert not np.allclose(raw["particles/all/position/value"][-1], corrected["particles/all/position/value"][-1])
        # Frame 0: both sit on the same structure, where E' = E0 = E.
        assert corrected["observables/potential_energy/value"][0] == raw["observables/potential_energy/value"][0]
        # Forces at frame 0 are the raw ones divided by s.
        np.testing.assert_allclose(corrected["particles/all/force/value"][0] * 0.627,
                                   raw["particles/all/force/value"][0], rtol=1e-5, atol=1e-6)
    # A stiffer PES at the same temperature: smaller thermal displacements (harmonic: x sqrt(s)).
    ratio = jobs["corrected-T1000K"]["rms_displacement_A"] / jobs["raw-T1000K"]["rms_displacement_A"]
    assert ratio < 1.0 and abs(ratio - math.sqrt(0.627)) < 0.2
