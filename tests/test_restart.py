"""Restart after a kill: checkpoints in the job file, `driver run --resume`, and the faults a
cluster run meets (damaged checkpoint, unreadable file, full disk, changed recipe)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from driver.checkpoint import read_latest
from driver.cli import main
from driver.output import H5MDWriter, recover
from driver.tasks.md import MDTask, initialize_velocities, run_md
from tests.conftest import write_recipe
from tests.sigkill import sigkill_once_stored

ROOT = Path(__file__).resolve().parents[1]
JOB = "raw-T500K"


# 1. every ensemble continues exactly from its checkpoint (in-process, EMT: fast) ----------------

def _md(path: Path, task: MDTask, resume_from: Path | None = None) -> None:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=3)
    atoms.calc = EMT()
    if resume_from is None:
        initialize_velocities(atoms, 600.0, task.seed)
        writer = H5MDWriter(path, atoms, provenance={}, flush_every=3)
        state = None
    else:
        with h5py.File(resume_from, "r") as f:
            state = read_latest(f)
        writer = H5MDWriter.reopen(resume_from, state.frames, flush_every=3)
    run_md(atoms, task, 600.0, writer, write_every=2, checkpoint_every=5, resume=state)
    writer.close("completed")


def _frames(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        particles = f["particles/all"]
        return {"position": particles["position/value"][:], "velocity": particles["velocity/value"][:],
                "edges": particles["box/edges/value"][:], "step": particles["position/step"][:],
                **{name: f[f"observables/{name}/value"][:] for name in f["observables"]}}


@pytest.mark.parametrize("ensemble", ["nve", "nvt_langevin", "nvt_bussi", "nvt_nose_hoover",
                                      "npt_berendsen", "npt_mtk", "npt_mtk_aniso"])
def test_resumed_md_equals_uninterrupted_for_every_ensemble(tmp_path, ensemble):
    task = MDTask(kind="md", ensemble=ensemble, timestep_fs=2.0, steps=40, temperature_K=600.0, seed=7,
                  tdamp_fs=20.0, pdamp_fs=200.0)
    _md(tmp_path / "whole.h5", task)
    # A run killed at step 23 while writing its checkpoint: the newest valid one is step 20, and
    # the frame of step 22 is dropped on resume. A fresh integrator continues from there.
    _md(tmp_path / "split.h5", task.model_copy(update={"steps": 23}))
    with h5py.File(tmp_path / "split.h5", "r+") as f:
        for slot in f["checkpoint"].values():
            if json.loads(slot.attrs["header"])["step"] == 23:
                slot.attrs["sha256"] = ""
        assert read_latest(f).step == 20
    _md(tmp_path / "split.h5", task, resume_from=tmp_path / "split.h5")
    whole, split = _frames(tmp_path / "whole.h5"), _frames(tmp_path / "split.h5")
    assert set(whole) == set(split)
    assert np.array_equal(whole["step"], np.arange(0, 41, 2))
    for name in whole:
        np.testing.assert_allclose(split[name], whole[name], rtol=0, atol=1e-10, err_msg=name)
    if ensemble != "nve":  # the thermostat did act: the test would notice lost thermostat state
        assert np.ptp(whole["total_energy"]) > 1e-3


# 2. SIGKILL mid-run, then --resume, in real processes with CHGNet ----------------------------

def _driver(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "driver", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, **kwargs)


@pytest.mark.parametrize("ensemble", ["nve", "nvt_langevin"])
def test_sigkill_then_resume_gives_the_uninterrupted_trajectory(tmp_path, ensemble):
    sections = {"task": {"ensemble": ensemble, "steps": 300, "timestep_fs": 1.0},
                "output": {"write_every": 2, "flush_every": 5, "checkpoint_every": 20}}
    recipe = write_recipe(tmp_path, **sections)
    whole_dir, killed_dir = tmp_path / "whole", tmp_path / "killed"
    whole = _driver("-q", "run", str(recipe), "--out", str(whole_dir))
    assert whole.returncode == 0, whole.stderr

    h5 = killed_dir / f"{JOB}.h5"
    sigkill_once_stored([sys.executable, "-m", "driver", "-q", "run", str(recipe), "--out", str(killed_dir)], h5,
                        tmp_path / "peek.h5", 60, read_latest, timeout_s=180)
    # What the kill left opens, and holds every frame up to the checkpoint (flushed with it).
    with h5py.File(h5, "r") as f:
        state = read_latest(f)
        assert f.attrs["status"] == "running" and state is not None and 60 <= state.step < 300
        assert f["particles/all/position/value"].shape[0] >= state.frames == state.step // 2 + 1
    assert not (killed_dir / "summary.json").exists()

    resumed = _driver("run", str(recipe), "--out", str(killed_dir), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from the checkpoint at step {state.step}" in resumed.stderr
    with h5py.File(whole_dir / f"{JOB}.h5", "r") as a, h5py.File(h5, "r") as b:
        assert b.attrs["status"] == "completed"
        for name in ("position/value", "velocity/value", "position/step"):
            np.testing.assert_allclose(b[f"particles/all/{name}"][:], a[f"particles/all/{name}"][:],
                                       rtol=0, atol=1e-10, err_msg=name)
        assert b["particles/all/position/value"].shape[0] == 151
    summaries = [json.loads((folder / "summary.json").read_text())["jobs"][0] for folder in (whole_dir, killed_dir)]
    assert summaries[0]["status"] == summaries[1]["status"] == "completed"
    for key in ("mean_temperature_K", "rms_displacement_A", "final_potential_energy_eV", "frames"):
        assert summaries[1][key] == pytest.approx(summaries[0][key], rel=1e-12, abs=1e-12), key


# 3. what --resume does with finished jobs, other recipes and damaged files ------------------

@pytest.fixture
def finished_run(tmp_path, capsys):
    recipe = write_recipe(tmp_path, task={"steps": 6}, output={"checkpoint_every": 2})
    assert main(["-q", "run", str(recipe)]) == 0
    capsys.readouterr()
    return recipe, tmp_path / "out"


def test_resume_skips_finished_jobs_and_reports_them(finished_run, capsys, caplog):
    recipe, out = finished_run
    caplog.set_level(logging.INFO)
    before = (out / f"{JOB}.h5").read_bytes()
    first = json.loads((out / "summary.json").read_text())["jobs"]
    assert main(["run", str(recipe), "--resume"]) == 0
    assert (out / f"{JOB}.h5").read_bytes() == before
    assert json.loads((out / "summary.json").read_text())["jobs"] == first
    assert "already completed; skipped" in caplog.text


def test_resume_with_another_recipe_is_refused(finished_run, tmp_path, capsys):
    _, out = finished_run
    other = write_recipe(tmp_path, filename="other.yaml", task={"steps": 6, "seed": 2},
                         output={"checkpoint_every": 2})
    assert main(["run", str(other), "--resume"]) == 2
    err = _error_line(capsys)
    assert f"{JOB}.h5" in err and "task.seed differs" in err, err


def _error_line(capsys) -> str:
    """The one line a user reads: exactly one `error:` line and no traceback."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def _mark_unfinished(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        f.attrs["status"] = "running"


def test_damaged_checkpoint_is_a_clear_error(finished_run, capsys):
    recipe, out = finished_run
    path = out / f"{JOB}.h5"
    _mark_unfinished(path)
    with h5py.File(path, "r+") as f:
        for slot in f["checkpoint"].values():
            slot["positions"][0, 0] += 0.1  # a bit flipped on disk: the checksum no longer matches
    assert main(["run", str(recipe), "--resume"]) == 2
    err = _error_line(capsys)
    assert "checkpoint damaged" in err and str(path) in err, err


def test_resume_falls_back_to_the_older_valid_slot(finished_run, caplog):
    recipe, out = finished_run
    path = out / f"{JOB}.h5"
    _mark_unfinished(path)
    with h5py.File(path, "r+") as f:
        steps = {name: json.loads(slot.attrs["header"])["step"] for name, slot in f["checkpoint"].items()}
        newest = max(steps, key=steps.get)
        f["checkpoint"][newest].attrs["sha256"] = ""  # killed while this slot was being written
        older = read_latest(f)
    assert older.step == min(steps.values()) < max(steps.values())
    caplog.set_level(logging.INFO)
    assert main(["run", str(recipe), "--resume"]) == 0
    assert f"resuming from the checkpoint at step {older.step}" in caplog.text


def test_unreadable_job_file_is_a_clear_error(finished_run, capsys):
    recipe, out = finished_run
    path = out / f"{JOB}.h5"
    path.write_bytes(path.read_bytes()[:2000])  # cut short, as by a full disk or a bad copy
    assert main(["run", str(recipe), "--resume"]) == 2
    err = _error_line(capsys)
    assert str(path) in err and "cannot be read to resume" in err, err


def test_resume_on_an_empty_folder_starts_the_run(tmp_path, capsys):
    recipe = write_recipe(tmp_path, task={"steps": 4})
    assert main(["-q", "run", str(recipe), "--resume"]) == 0
    with h5py.File(tmp_path / "out" / f"{JOB}.h5", "r") as f:
        assert f.attrs["status"] == "completed"


# 4. the disk fills up mid-run ----------------------------------------------------------------

# The command line, with files limited to 300 kB as on a full disk (the write fails with EFBIG
# instead of ENOSPC: the same failed write for HDF5). MPI starts first: it writes files itself.
_FULL_DISK_CLI = """
import resource, signal, sys
from driver.parallel import World
World()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
from driver.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_full_disk_mid_run_is_one_line_and_keeps_flushed_frames(tmp_path):
    recipe = write_recipe(tmp_path, task={"steps": 4000}, output={"write_every": 1, "flush_every": 10})
    result = subprocess.run([sys.executable, "-c", _FULL_DISK_CLI, "-q", "run", str(recipe)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    # The journal's write is the first to fail: it names that file, the reason and the free space.
    assert f"{JOB}.h5.journal: writing failed (File too large; " in errors[0], errors
    assert " MiB free on " in errors[0] and "--resume" in errors[0], errors
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["jobs"][0]["status"] == "interrupted" and "writing failed" in summary["jobs"][0]["error"]
    # What --resume does first: the file rebuilt from the journal's whole records holds every
    # frame written before the failure and its newest checkpoint.
    h5 = tmp_path / "out" / f"{JOB}.h5"
    recover(h5)
    with h5py.File(h5, "r") as f:
        state = read_latest(f)
        frames = f["particles/all/position/value"].shape[0]
        assert state is not None and state.step > 0 and frames >= state.frames
        assert np.array_equal(f["particles/all/position/step"][:], np.arange(frames))


def test_nearly_full_disk_stops_with_a_whole_file_that_resumes(tmp_path, capsys, monkeypatch):
    """Before HDF5 runs out of room, the driver stops: checkpoint written, file closed whole."""
    import driver.output

    recipe = write_recipe(tmp_path, task={"steps": 40}, output={"write_every": 1, "flush_every": 5,
                                                                "checkpoint_every": 10})
    calls = []
    real_usage = shutil.disk_usage

    def filling_disk(path):
        calls.append(path)
        usage = real_usage(path)
        return usage._replace(free=10 << 20) if len(calls) >= 3 else usage

    monkeypatch.setattr(driver.output.shutil, "disk_usage", filling_disk)
    assert main(["-q", "run", str(recipe)]) == 1
    err = _error_line(capsys)
    assert f"{JOB}.h5: disk nearly full (10 MiB free" in err and "--resume" in err, err
    path = tmp_path / "out" / f"{JOB}.h5"
    with h5py.File(path, "r") as f:
        assert f.attrs["status"] == "interrupted"
        assert f["particles/all/position/value"].shape[0] == 15 and read_latest(f).step == 14
    monkeypatch.setattr(driver.output.shutil, "disk_usage", real_usage)  # space freed
    assert main(["-q", "run", str(recipe), "--resume"]) == 0
    with h5py.File(path, "r") as f:
        assert f.attrs["status"] == "completed"
        assert np.array_equal(f["particles/all/position/step"][:], np.arange(41))
