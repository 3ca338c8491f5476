"""The output layer: H5MD 1.1 files written while a job runs, read back by h5py, by an
independent reader (MDAnalysis), by `driver inspect`, and after a kill or an interruption."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read

from driver.checkpoint import read_latest
from driver.cli import main
from driver.inspect_h5 import describe
from driver.output import H5MDWriter
from tests.conftest import ROOT, SI_CIF, write_recipe

STEPS, WRITE_EVERY, TIMESTEP_FS = 10, 2, 2.0
JOB = "raw-T500K"
# 1 u (Angstrom/fs)^2 in eV, from CODATA constants (u = 1.66053907e-27 kg, e = 1.60217663e-19 C).
U_A2_PER_FS2_IN_EV = 1.66053907e-27 * 1e10 / 1.60217663e-19


def _run_cli(recipe: Path) -> int:
    """`driver run` in this process, without leaving its SIGTERM handler behind."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        return main(["run", str(recipe)])
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_recipe(folder: Path, **output) -> tuple[Path, Path]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DRIVER_OFFLINE", "1")
        recipe = write_recipe(folder, task={"steps": STEPS, "timestep_fs": TIMESTEP_FS},
                              output={"write_every": WRITE_EVERY, "flush_every": 2, **output})
        assert _run_cli(recipe) == 0
    return recipe, folder / "out" / f"{JOB}.h5"


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> tuple[Path, Path]:
    """One short CHGNet run with every output on: (recipe, h5 file)."""
    return _run_recipe(tmp_path_factory.mktemp("default"))


@pytest.fixture(scope="module")
def no_force_run(tmp_path_factory) -> tuple[Path, Path]:
    return _run_recipe(tmp_path_factory.mktemp("noforce"), forces=False)


def _series_lengths(handle: h5py.File) -> dict[str, int]:
    lengths = {}

    def visit(name, item):
        if isinstance(item, h5py.Dataset) and name.rsplit("/", 1)[-1] in ("step", "time", "value") \
                and item.maxshape and item.maxshape[0] is None:
            lengths[name] = item.shape[0]

    handle.visititems(visit)
    return lengths


# 1. layout ------------------------------------------------------------------------------------

def test_run_writes_h5md_layout_units_and_provenance(default_run):
    recipe, path = default_run
    n_frames = STEPS // WRITE_EVERY + 1
    assert path.is_file()
    with h5py.File(path, "r") as f:
        assert f.attrs["status"] == "completed"
        assert list(f["h5md"].attrs["version"]) == [1, 1]
        assert isinstance(f["h5md/author"], h5py.Group)
        assert isinstance(f["h5md/creator"], h5py.Group)
        assert "name" in f["h5md/creator"].attrs and "version" in f["h5md/creator"].attrs

        particles = f["particles/all"]
        for name in ("position", "velocity", "force"):
            assert set(particles[name]) >= {"step", "time", "value"}, name
            assert particles[f"{name}/value"].shape == (n_frames, 8, 3)
        box = particles["box"]
        assert box.attrs["dimension"] == 3
        assert [str(b) for b in box.attrs["boundary"]] == ["periodic"] * 3
        assert box["edges/value"].shape == (n_frames, 3, 3)
        assert box["edges/step"].shape == box["edges/time"].shape == (n_frames,)
        assert list(particles["species"][()]) == [14] * 8

        for name in ("potential_energy", "kinetic_energy", "total_energy", "temperature"):
            group = f[f"observables/{name}"]
            assert set(group) >= {"step", "time", "value"}, name
            assert group["value"].shape == (n_frames,)

        # every value and time dataset states its unit
        missing = []

        def visit(name, item):
            if isinstance(item, h5py.Dataset) and name.rsplit("/", 1)[-1] in ("value", "time"):
                if not item.attrs.get("unit"):
                    missing.append(name)

        f["particles"].visititems(visit)
        f["observables"].visititems(visit)
        assert not missing, f"datasets without a unit: {missing}"
        assert particles["position/value"].attrs["unit"] == "Angstrom"
        assert particles["velocity/value"].attrs["unit"] == "Angstrom fs-1"
        assert particles["force/value"].attrs["unit"] == "eV Angstrom-1"
        assert particles["position/time"].attrs["unit"] == "fs"
        assert f["observables/temperature/value"].attrs["unit"] == "K"
        assert f["observables/potential_energy/value"].attrs["unit"] == "eV"

        # frames: steps 0, write_every, ...; time = step * timestep; every series equally long
        expected_steps = np.arange(0, STEPS + 1, WRITE_EVERY)
        for name in ("position", "velocity", "force", "box/edges"):
            np.testing.assert_array_equal(particles[f"{name}/step"][()], expected_steps)
        np.testing.assert_array_equal(f["observables/temperature/step"][()], expected_steps)
        np.testing.assert_allclose(particles["position/time"][()], expected_steps * TIMESTEP_FS)
        assert set(_series_lengths(f).values()) == {n_frames}

        # values are physical: the start structure, KE from stored velocities, E = Epot + Ekin
        start = read(SI_CIF)
        np.testing.assert_allclose(particles["position/value"][0], start.positions, atol=1e-8)
        np.testing.assert_allclose(particles["box/edges/value"][0], start.cell[:], atol=1e-8)
        masses = particles["mass"][()]
        velocities = particles["velocity/value"][()]
        kinetic = 0.5 * np.einsum("i,fij,fij->f", masses, velocities, velocities)
        kinetic *= U_A2_PER_FS2_IN_EV
        np.testing.assert_allclose(f["observables/kinetic_energy/value"][()], kinetic, rtol=1e-6)
        np.testing.assert_allclose(f["observables/total_energy/value"][()],
                                   f["observables/potential_energy/value"][()]
                                   + f["observables/kinetic_energy/value"][()], rtol=1e-12)
        assert np.isfinite(particles["force/value"][()]).all()
        assert np.abs(particles["force/value"][-1]).max() > 1e-3  # atoms moved off the lattice

        params = f["parameters"].attrs
        assert params["recipe"] == recipe.read_text()
        versions = json.loads(params["package_versions"])
        assert versions["h5py"] == h5py.__version__
        assert re.fullmatch(r"[0-9a-f]{64}", params["model_weights_sha256"])
        assert params["seed"] == 1
        assert params["mpi_size"] == 1
        start_time = dt.datetime.fromisoformat(params["start_time"])
        end_time = dt.datetime.fromisoformat(params["end_time"])
        assert start_time <= end_time
        # no pre-relaxation: the reference energy is the raw energy of frame 0
        assert params["reference_energy_eV"] == pytest.approx(
            f["observables/potential_energy/value"][0], rel=1e-6)

        results = f["results/md"].attrs
        assert results["steps"] == STEPS
        assert results["frames"] == n_frames
        assert results["ensemble"] == "nvt_langevin"
        mean_temperature = np.mean(f["observables/temperature/value"][()])
        assert results["mean_temperature_K"] == pytest.approx(mean_temperature)

    summary = json.loads((path.parent / "summary.json").read_text())
    [entry] = summary["jobs"]
    assert entry["job"] == JOB and entry["file"] == path.name and entry["status"] == "completed"


# 2. an independent reader -----------------------------------------------------------------------

def test_mdanalysis_reads_positions_velocities_and_box(no_force_run):
    from MDAnalysis.coordinates.H5MD import H5MDReader

    _, path = no_force_run
    with h5py.File(path, "r") as f:
        assert "force" not in f["particles/all"]
        positions = f["particles/all/position/value"][()]
        velocities = f["particles/all/velocity/value"][()]
        edges = f["particles/all/box/edges/value"][()]
        times_fs = f["particles/all/position/time"][()]
    reader = H5MDReader(str(path), convert_units=True)
    try:
        assert reader.n_frames == len(positions) == STEPS // WRITE_EVERY + 1
        for i, ts in enumerate(reader):
            assert np.allclose(ts.positions, positions[i], atol=1e-6)
            # MDAnalysis converts Angstrom/fs to its base unit Angstrom/ps
            np.testing.assert_allclose(ts.velocities, 1000.0 * velocities[i], rtol=1e-5, atol=1e-4)
            lengths = np.linalg.norm(edges[i], axis=1)
            np.testing.assert_allclose(ts.dimensions[:3], lengths, rtol=1e-6)
            np.testing.assert_allclose(ts.dimensions[3:], [90, 90, 90], atol=1e-4)
            assert ts.time == pytest.approx(times_fs[i] / 1000.0)
    finally:
        reader.close()


def test_mdanalysis_reads_forces_with_registered_unit(default_run, monkeypatch):
    from MDAnalysis.coordinates.H5MD import H5MDReader

    # MDAnalysis's unit tables know no eV-based force unit, so its H5MD reader refuses
    # "eV Angstrom-1" outright (RuntimeError). Register the name so it can read the file; with
    # convert_units=False it hands back the stored numbers, which we compare with h5py's.
    monkeypatch.setitem(H5MDReader._unit_translation["force"], "eV Angstrom-1", "eV/Angstrom")
    _, path = default_run
    with h5py.File(path, "r") as f:
        positions = f["particles/all/position/value"][()]
        forces = f["particles/all/force/value"][()]
    reader = H5MDReader(str(path), convert_units=False)
    try:
        assert reader.n_frames == len(positions)
        for i, ts in enumerate(reader):
            assert ts.has_forces
            assert np.allclose(ts.positions, positions[i], atol=1e-6)
            assert np.allclose(ts.forces, forces[i], atol=1e-5)
    finally:
        reader.close()


# 3. streaming: a kill leaves the frames of the last flush ------------------------------------

def _frame(i: int, rng: np.random.Generator) -> tuple[Atoms, np.ndarray]:
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    velocities_A_fs = rng.normal(0, 0.005, atoms.positions.shape)
    atoms.set_velocities(velocities_A_fs / units.fs)
    atoms.calc = SinglePointCalculator(atoms, energy=-40.0 - 0.01 * i,
                                       forces=rng.normal(0, 0.5, atoms.positions.shape))
    return atoms, velocities_A_fs


def test_flushed_frames_survive_without_close(tmp_path):
    rng = np.random.default_rng(0)
    path, copy = tmp_path / "live.h5", tmp_path / "killed.h5"
    frames = [_frame(i, rng) for i in range(12)]
    writer = H5MDWriter(path, frames[0][0], provenance={"seed": 7}, flush_every=5)
    for i, (atoms, _) in enumerate(frames):
        writer.append(3 * i, 1.5 * i, atoms, {"potential_energy": atoms.get_potential_energy()})
    # The writer still holds the file (as a killed process would have): look at the bytes on disk.
    shutil.copyfile(path, copy)
    with h5py.File(copy, "r") as f:
        assert f.attrs["status"] == "running"
        stored = f["particles/all/position/value"][()]
        n = len(stored)
        assert n >= 10
        for i in range(n):
            np.testing.assert_array_equal(stored[i], frames[i][0].positions)
        np.testing.assert_array_equal(f["particles/all/position/step"][:n], 3 * np.arange(n))
    assert describe(copy).splitlines()[0].endswith("status running")
    writer.close("completed")
    writer.close("completed")  # a second close is harmless

    with h5py.File(path, "r") as f:
        assert f.attrs["status"] == "completed"
        assert set(_series_lengths(f).values()) == {12}
        np.testing.assert_array_equal(f["particles/all/position/value"][()],
                                      [atoms.positions for atoms, _ in frames])
        np.testing.assert_allclose(f["particles/all/velocity/value"][()],
                                   [v for _, v in frames], rtol=1e-12)
        np.testing.assert_array_equal(f["particles/all/force/value"][()],
                                      [atoms.get_forces() for atoms, _ in frames])
        np.testing.assert_array_equal(f["observables/potential_energy/value"][()],
                                      [atoms.get_potential_energy() for atoms, _ in frames])
        np.testing.assert_allclose(f["particles/all/position/time"][()], 1.5 * np.arange(12))
        assert f["parameters"].attrs["seed"] == 7


def test_frame_broken_off_midway_is_not_kept(tmp_path):
    """An exception (or a signal) inside append must not leave a half-written frame behind."""
    rng = np.random.default_rng(1)
    path = tmp_path / "broken.h5"
    writer = H5MDWriter(path, _frame(0, rng)[0], provenance={}, flush_every=1)
    for i in range(3):
        atoms, _ = _frame(i, rng)
        writer.append(i, float(i), atoms, {"potential_energy": atoms.get_potential_energy()})
    broken, _ = _frame(3, rng)
    broken.calc = SinglePointCalculator(broken, energy=-1.0)  # no forces: append fails midway
    with pytest.raises(PropertyNotImplementedError):
        writer.append(3, 3.0, broken, {"potential_energy": -1.0})
    writer.close("failed")
    with h5py.File(path, "r") as f:
        assert f.attrs["status"] == "failed"
        assert set(_series_lengths(f).values()) == {3}, _series_lengths(f)


# 4. compression -----------------------------------------------------------------------------

def test_gzip_compression_and_chunked_extendable_datasets(tmp_path):
    _, path = _run_recipe(tmp_path, compression="gzip")
    with h5py.File(path, "r") as f:
        values = []

        def visit(name, item):
            if isinstance(item, h5py.Dataset) and name.endswith("/value"):
                values.append(item)

        f["particles"].visititems(visit)
        f["observables"].visititems(visit)
        assert len(values) >= 8  # position, velocity, force, box edges, four observables
        for item in values:
            assert item.compression == "gzip", item.name
        for name, length in _series_lengths(f).items():
            item = f[name]
            assert item.chunks is not None, name
            assert item.maxshape[0] is None, name
            assert length == STEPS // WRITE_EVERY + 1
        assert f["particles/all/position/value"].chunks[1:] == (8, 3)


# 5. driver inspect --------------------------------------------------------------------------

def test_inspect_lists_status_frames_and_units(default_run, capsys):
    _, path = default_run
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "status completed" in out
    assert re.search(rf"frames: {STEPS // WRITE_EVERY + 1}\b", out)
    lines = out.splitlines()
    for dataset, unit in (("particles/all/position/value", "Angstrom"),
                          ("particles/all/force/value", "eV Angstrom-1"),
                          ("observables/temperature/value", "K"),
                          ("particles/all/position/time", "fs")):
        [line] = [ln for ln in lines if ln.split() and ln.split()[0] == dataset]
        assert line.rstrip().endswith(f"[{unit}]"), line
    # step and time are shared (hard links) between series; each series still lists its own
    for series in ("particles/all/position", "particles/all/force", "observables/temperature"):
        assert f"  {series}/step  " in out and f"  {series}/time  " in out, series


@pytest.mark.parametrize("kind", ["missing", "not_hdf5"])
def test_inspect_bad_file_is_one_line_exit_2(tmp_path, capsys, kind):
    path = tmp_path / "result.h5"
    if kind == "not_hdf5":
        path.write_text("this is not an HDF5 file\n")
    assert main(["inspect", str(path)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    err_lines = captured.err.strip().splitlines()
    assert len(err_lines) == 1 and str(path) in err_lines[0], captured.err


# 6. interruption ----------------------------------------------------------------------------

def _frames_on_disk(path: Path, scratch: Path) -> int:
    """Frames in a file another process is writing (read from a copy: the writer holds a lock)."""
    if not path.exists():
        return 0
    try:
        shutil.copyfile(path, scratch)
        with h5py.File(scratch, "r") as f:
            return f["particles/all/position/value"].shape[0]
    except Exception:  # a copy taken mid-write may be unreadable: try again
        return 0


def test_sigterm_marks_file_and_summary_interrupted(tmp_path):
    recipe = write_recipe(tmp_path, compare=True, correction={"scale": 0.9},
                          task={"steps": 5000}, output={"write_every": 1, "flush_every": 1})
    out = tmp_path / "out"
    h5 = out / f"{JOB}.h5"
    stdout, stderr = open(tmp_path / "stdout", "w+"), open(tmp_path / "stderr", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "driver", "run", str(recipe)], cwd=ROOT,
                            stdout=stdout, stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while _frames_on_disk(h5, tmp_path / "peek.h5") < 2:
            assert proc.poll() is None, "driver ended before it could be interrupted"
            assert time.monotonic() < deadline, "no frames on disk after 120 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr.seek(0)
    err = stderr.read()
    assert rc == 130, err
    assert "Traceback" not in err, err
    assert f"driver run {recipe} --resume" in err, err
    with h5py.File(h5, "r") as f:
        assert f.attrs["status"] == "interrupted"
        # the step it stopped at was checkpointed, with every frame written before it
        state = read_latest(f)
        assert state is not None and state.step > 0 and state.frames == f["particles/all/position/value"].shape[0]
        lengths = set(_series_lengths(f).values())
        assert len(lengths) == 1 and lengths.pop() >= 1, _series_lengths(f)
        assert "end_time" in f["parameters"].attrs
    summary = json.loads((out / "summary.json").read_text())
    status = {entry["job"]: entry["status"] for entry in summary["jobs"]}
    assert status == {JOB: "interrupted", "corrected-T500K": "not run"}
    assert not (out / "corrected-T500K.h5").exists()
