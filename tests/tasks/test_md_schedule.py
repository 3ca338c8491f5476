"""Temperature schedules (task.temperature_K as a ramp or [step, K] breakpoints): the thermostat
follows the target, the explosion check uses the current target, --resume continues the schedule,
and bad schedules are one-line errors."""

from __future__ import annotations

import json
import os
import signal

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from driver.checkpoint import read_latest
from driver.cli import main
from driver.output import H5MDWriter
from driver.tasks.md import MDTask, initialize_velocities, run_md
from driver.tasks.md_schedule import Schedule
from tests.conftest import ROOT, emt_recipe, write_recipe


def _cu32() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.02, seed=1)
    atoms.calc = EMT()
    return atoms


def _observables(path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {"step": f["observables/temperature/step"][:],
                **{name: f[f"observables/{name}/value"][:] for name in f["observables"]}}


def test_schedule_interpolates_and_holds():
    schedule = Schedule(((0, 300.0), (100, 1200.0), (200, 1200.0), (300, 300.0)))
    assert [schedule.at(step) for step in (0, 50, 100, 150, 250, 300, 10_000)] == [300, 750, 1200, 1200, 750, 300, 300]
    assert schedule.label() == "T300-1200-300K"


def test_langevin_follows_a_ramp(tmp_path):
    """EMT Cu (32 atoms), Langevin (1/friction = 20 fs): heated 300 -> 900 K over 600 steps, then
    held for 400. The held part's mean temperature is the final target and the ramp's tracks the
    moving target; a thermostat left at the first target would stay near 300 K."""
    atoms = _cu32()
    task = MDTask(kind="md", ensemble="nvt_langevin", timestep_fs=2.0, steps=1000, friction_per_fs=0.05, seed=3,
                  temperature_K={"start": 300, "stop": 900, "steps": 600})
    initialize_velocities(atoms, 300, task.seed)
    writer = H5MDWriter(tmp_path / "ramp.h5", atoms, provenance={}, flush_every=50)
    run_md(atoms, task, task.schedule, writer, write_every=2)
    writer.close("completed")
    seen = _observables(tmp_path / "ramp.h5")
    np.testing.assert_allclose(seen["target_temperature"], np.interp(seen["step"], [0, 600], [300, 900]))
    held = seen["step"] >= 700
    assert abs(seen["temperature"][held].mean() - 900) < 60  # measured 884-934 K over three seeds
    for first, last in ((50, 150), (300, 600)):  # early and late in the ramp: T lags the target a little
        window = (seen["step"] >= first) & (seen["step"] < last)
        assert abs(np.mean(seen["temperature"][window] - seen["target_temperature"][window])) < 60, (first, last)


@pytest.mark.parametrize("ensemble", ["nvt_bussi", "nvt_nose_hoover", "npt_berendsen", "npt_mtk", "npt_mtk_aniso"])
def test_other_thermostats_follow_a_schedule(tmp_path, ensemble):
    """Cooling 900 -> 300 K: each integrator's own target moves (Bussi's kinetic energy, Berendsen's
    temperature, the Nose-Hoover and MTK chains' kT), so the end is far colder than the start."""
    atoms = _cu32()
    task = MDTask(kind="md", ensemble=ensemble, timestep_fs=2.0, steps=400, tdamp_fs=40.0, pdamp_fs=400.0, seed=2,
                  temperature_K={"schedule": [[0, 900], [200, 300]]})
    initialize_velocities(atoms, 900, task.seed)
    writer = H5MDWriter(tmp_path / "cool.h5", atoms, provenance={}, flush_every=50)
    run_md(atoms, task, task.schedule, writer, write_every=2)
    writer.close("completed")
    seen = _observables(tmp_path / "cool.h5")
    held = seen["temperature"][seen["step"] >= 250].mean()
    assert abs(held - 300) < 60, held  # measured 285-313 K over two seeds


def test_explosion_check_uses_the_current_target(emt_family, tmp_path, capsys):
    """Quenched 2000 -> 100 K in 20 steps with weak friction: the atoms stay hot while the target
    falls, and 1.5 x the *current* target (not the first) stops the job."""
    recipe = emt_recipe(tmp_path, {"kind": "md", "ensemble": "nvt_langevin", "timestep_fs": 2.0, "steps": 60,
                                   "friction_per_fs": 0.001, "max_temperature_factor": 1.5, "seed": 1,
                                   "temperature_K": {"schedule": [[0, 2000], [20, 100]]}},
                        correction=None, compare=False, output={"directory": str(tmp_path / "out")})
    assert main(["-q", "run", str(recipe)]) == 1
    job = json.loads((tmp_path / "out" / "summary.json").read_text())["jobs"][0]
    assert job["job"] == "raw-T2000-100K" and job["status"] == "failed"
    assert "exploded" in job["error"] and "x the target" in job["error"]
    target = float(job["error"].split("the target ")[1].split(" K")[0])
    assert target < 2000 / 1.5  # the target of that step, below what the first target allowed


def _md(path, task: MDTask, resume_from=None) -> None:
    """As tests/test_restart.py: a job from the start, or continued from a file's checkpoint."""
    atoms = _cu32()
    if resume_from is None:
        initialize_velocities(atoms, task.schedule.start_K, task.seed)
        writer, state = H5MDWriter(path, atoms, provenance={}, flush_every=3), None
    else:
        with h5py.File(resume_from, "r") as f:
            state = read_latest(f)
        writer = H5MDWriter.reopen(resume_from, state.frames, flush_every=3)
    run_md(atoms, task, task.schedule, writer, write_every=2, checkpoint_every=5, resume=state)
    writer.close("completed")


@pytest.mark.parametrize("ensemble", ["nvt_langevin", "nvt_bussi", "nvt_nose_hoover", "npt_berendsen", "npt_mtk",
                                      "npt_mtk_aniso"])
def test_every_thermostat_resumes_mid_schedule_exactly(tmp_path, ensemble):
    """Stopped at step 25 of 40 (checkpoint at 25, mid-ramp), continued by a fresh integrator: the
    same frames as one uninterrupted run, so the target at the checkpoint's step was restored."""
    task = MDTask(kind="md", ensemble=ensemble, timestep_fs=2.0, steps=40, tdamp_fs=20.0, pdamp_fs=200.0, seed=7,
                  temperature_K={"schedule": [[0, 400], [30, 1000], [40, 700]]})
    _md(tmp_path / "whole.h5", task)
    _md(tmp_path / "split.h5", task.model_copy(update={"steps": 25}))
    _md(tmp_path / "split.h5", task, resume_from=tmp_path / "split.h5")
    whole, split = _observables(tmp_path / "whole.h5"), _observables(tmp_path / "split.h5")
    assert set(whole) == set(split) and np.array_equal(whole["step"], np.arange(0, 41, 2))
    for name in whole:
        np.testing.assert_allclose(split[name], whole[name], rtol=0, atol=1e-10, err_msg=name)


def _sigterm_at(monkeypatch, step: int) -> None:
    """A preemption (Slurm's SIGTERM) when the first job reaches `step`."""
    import driver.tasks.md as md

    real = md.observables
    sent = []

    def observing(atoms, integrator, with_cell):
        if integrator.nsteps == step and not sent:
            sent.append(step)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(atoms, integrator, with_cell)

    monkeypatch.setattr(md, "observables", observing)


SCHEDULED = {"kind": "md", "ensemble": "nvt_nose_hoover", "timestep_fs": 2.0, "steps": 80, "tdamp_fs": 40.0,
             "seed": 4, "temperature_K": {"schedule": [[0, 300], [40, 900], [60, 900], [80, 500]]}}


def _scheduled_recipe(folder, output: dict):
    folder.mkdir()
    return emt_recipe(folder, SCHEDULED, output={"write_every": 2, "checkpoint_every": 10, **output})


@pytest.mark.parametrize("output", [{}, {"trajectory": False}])
def test_resumed_schedule_equals_uninterrupted(emt_family, tmp_path, monkeypatch, output):
    """SIGTERM at step 30 (mid-ramp), then --resume: the schedule continues at the checkpoint's
    step, and both jobs (raw, corrected) end as the uninterrupted run, to the last digit."""
    whole, split = _scheduled_recipe(tmp_path / "w", output), _scheduled_recipe(tmp_path / "s", output)
    assert main(["-q", "run", str(whole)]) == 0
    _sigterm_at(monkeypatch, 30)
    assert main(["-q", "run", str(split)]) != 0
    path = tmp_path / "s" / "out" / "raw-T300-900-500K.h5"
    with h5py.File(path, "r") as f:
        assert f.attrs["status"] == "interrupted" and read_latest(f).step == 30
    assert main(["-q", "run", str(split), "--resume"]) == 0
    for job in ("raw-T300-900-500K", "corrected-T300-900-500K"):
        a, b = _observables(tmp_path / "w" / "out" / f"{job}.h5"), _observables(tmp_path / "s" / "out" / f"{job}.h5")
        assert set(a) == set(b) and np.array_equal(a["step"], np.arange(0, 81, 2))
        for name in a:
            np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-10, err_msg=f"{job} {name}")
        assert a["target_temperature"][a["step"] == 70][0] == 700
    entries = [json.loads((tmp_path / d / "out" / "summary.json").read_text())["jobs"] for d in ("w", "s")]
    assert entries[0][0]["temperature_schedule_K"] == [[0, 300], [40, 900], [60, 900], [80, 500]]
    assert entries[0][0]["final_target_temperature_K"] == 500
    assert entries[1][0]["mean_temperature_K"] == pytest.approx(entries[0][0]["mean_temperature_K"], abs=1e-9)


def test_shipped_anneal_recipe_runs_at_a_tiny_size(tmp_path, capsys):
    """recipes/anneal_md.yaml as shipped, its ramp and run cut to a few steps (CHGNet, 8 Si atoms)."""
    import yaml

    recipe = yaml.safe_load((ROOT / "recipes" / "anneal_md.yaml").read_text())
    recipe["structure"]["file"] = str(ROOT / "recipes" / recipe["structure"]["file"])
    recipe["structure"]["supercell"] = [1, 1, 1]
    recipe["task"]["steps"] = 12
    recipe["task"]["temperature_K"]["steps"] = 6
    recipe["output"] = {**recipe["output"], "write_every": 2, "checkpoint_every": 4}
    path = tmp_path / "anneal.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 0
    jobs = {job["job"]: job for job in json.loads((tmp_path / "out" / "summary.json").read_text())["jobs"]}
    assert set(jobs) == {"raw-T300-1200K", "corrected-T300-1200K"}
    assert all(job["status"] == "completed" and job["temperature_K"] is None for job in jobs.values())
    seen = _observables(tmp_path / "out" / "corrected-T300-1200K.h5")
    np.testing.assert_allclose(seen["target_temperature"], [300, 600, 900, 1200, 1200, 1200, 1200])


@pytest.mark.parametrize("temperature, expected", [
    ({"schedule": [[0, 300], [500, 900], [400, 300]]}, "schedule: steps must increase, got step 400 after step 500"),
    ({"schedule": [[0, 300], [5, 900], [5, 300]]}, "schedule: steps must increase, got step 5 after step 5"),
    ({"schedule": [[0, 300], [5, 0]]}, "schedule: temperatures must be > 0"),
    ({"schedule": [[0, 300], [5, -20]]}, "schedule: temperatures must be > 0"),
    ({"schedule": [[3, 300], [5, 600]]}, "schedule: must start at step 0, got [3, 300]"),
    ({"schedule": [[0, 300]]}, "schedule: needs at least two [step, K] points"),
    ({"schedule": [[0, 300], [5.5, 600]]}, "schedule point 2 step: must be an integer"),
    ({"start": 300, "stop": 0, "steps": 5}, "ramp stop: must be > 0, got 0"),
    ({"start": -1, "stop": 600, "steps": 5}, "ramp start: must be > 0, got -1"),
    ({"start": 300, "stop": 600, "steps": 0}, "ramp steps: must be >= 1, got 0"),
    ({"start": 300, "stop": 600}, "ramp steps: is required"),
    ({"start": 300, "stop": 600, "steps": 50}, "the schedule runs to step 50, beyond task.steps (10)"),
])
def test_bad_schedules_are_one_line_errors(tmp_path, capsys, temperature, expected):
    recipe = write_recipe(tmp_path, task={"temperature_K": temperature})
    assert main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"task.temperature_K: {expected}" in err, err


def test_a_schedule_needs_a_thermostat(tmp_path, capsys):
    recipe = write_recipe(tmp_path, task={"ensemble": "nve", "temperature_K": {"start": 300, "stop": 600, "steps": 5}})
    assert main(["validate", str(recipe)]) == 2
    assert "task.temperature_K: a schedule needs a thermostat; ensemble nve has none" in capsys.readouterr().err
