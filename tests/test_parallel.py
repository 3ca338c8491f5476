"""`mpiexec -n 2 driver run`: the same files and results as a serial run, and no rank left hanging."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import LI2O_HOP, ROOT, write_recipe


def _mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.is_file() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
try:
    import mpi4py  # noqa: F401
    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False

pytestmark = [
    pytest.mark.skipif(MPIEXEC is None, reason="mpiexec not found next to the Python executable or on PATH "
                       "(pip install '.[mpi]')"),
    pytest.mark.skipif(not HAVE_MPI4PY, reason="mpi4py not importable (pip install '.[mpi]')"),
]


def _env() -> dict:
    # One torch thread per rank on the 2-core machines; the serial run uses the same.
    return {**os.environ, "DRIVER_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _run(command: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def test_two_ranks_match_serial_run(tmp_path):
    recipe = write_recipe(tmp_path, correction={"scale": 0.627}, compare=True,
                          task={"temperature_K": [400, 800], "steps": 10})
    serial_out, parallel_out = tmp_path / "serial", tmp_path / "parallel"
    serial = _run([sys.executable, "-m", "driver", "run", str(recipe), "--out", str(serial_out)], tmp_path)
    assert serial.returncode == 0, serial.stderr
    parallel = _run([MPIEXEC, "-n", "2", sys.executable, "-m", "driver", "run", str(recipe),
                     "--out", str(parallel_out)], tmp_path)
    assert parallel.returncode == 0, parallel.stderr
    assert parallel.stdout.count("Results in") == 1  # one report, from rank 0

    files = sorted(p.name for p in serial_out.glob("*.h5"))
    assert len(files) == 4
    assert sorted(p.name for p in parallel_out.glob("*.h5")) == files
    for name in files:
        with h5py.File(serial_out / name, "r") as s, h5py.File(parallel_out / name, "r") as p:
            assert p.attrs["status"] == "completed"
            np.testing.assert_allclose(p["particles/all/position/value"][:], s["particles/all/position/value"][:],
                                       rtol=0, atol=1e-6)
            assert s["parameters"].attrs["mpi_size"] == 1
            assert p["parameters"].attrs["mpi_size"] == 2

    serial_jobs = json.loads((serial_out / "summary.json").read_text())["jobs"]
    parallel_jobs = json.loads((parallel_out / "summary.json").read_text())["jobs"]
    assert [(j["job"], j["status"]) for j in parallel_jobs] == [(j["job"], j["status"]) for j in serial_jobs]
    assert all(j["status"] == "completed" for j in parallel_jobs)
    # Rank 1 logged its jobs to its own file.
    rank1 = (parallel_out / "logs" / "rank-1.log").read_text()
    assert "running" in rank1

    # Existing output: every rank stops with the same one-line error, exit 2.
    again = _run([MPIEXEC, "-n", "2", sys.executable, "-m", "driver", "run", str(recipe),
                  "--out", str(parallel_out)], tmp_path, timeout=60)
    assert again.returncode == 2
    assert "output exists; pass --resume" in again.stderr and "--overwrite" in again.stderr
    assert "Traceback" not in again.stderr


def test_uneven_job_counts_per_rank_finish_and_match_serial(tmp_path):
    """3 Langevin jobs on 2 ranks: rank 1 ends first. ASE's integrators broadcast their random
    numbers over ase.parallel.world by default (MPI's COMM_WORLD under mpiexec), which left rank 0
    blocked for ever in its second job; each job must run in a world of its own."""
    recipe = write_recipe(tmp_path, task={"temperature_K": [400, 600, 800], "steps": 10})
    serial_out, parallel_out = tmp_path / "serial", tmp_path / "parallel"
    assert _run([sys.executable, "-m", "driver", "run", str(recipe), "--out", str(serial_out)], tmp_path).returncode == 0
    parallel = _run([MPIEXEC, "-n", "2", sys.executable, "-m", "driver", "run", str(recipe),
                     "--out", str(parallel_out)], tmp_path, timeout=240)
    assert parallel.returncode == 0, parallel.stderr
    for name in ("raw-T400K.h5", "raw-T600K.h5", "raw-T800K.h5"):
        with h5py.File(serial_out / name, "r") as s, h5py.File(parallel_out / name, "r") as p:
            np.testing.assert_allclose(p["particles/all/position/value"][:], s["particles/all/position/value"][:],
                                       rtol=0, atol=1e-6, err_msg=name)


def test_abort_on_one_rank_stops_all(tmp_path):
    script = tmp_path / "abort.py"
    script.write_text(textwrap.dedent("""
        from driver.parallel import World
        world = World()
        if world.rank == 1:
            world.abort("rank one broke: boom")
        world.barrier()  # rank 0 would wait here forever without Abort
        print("rank 0 passed the barrier")
    """))
    started = time.monotonic()
    result = _run([MPIEXEC, "-n", "2", sys.executable, str(script)], tmp_path, timeout=60)
    assert time.monotonic() - started < 30
    assert result.returncode != 0
    assert "rank one broke: boom" in result.stderr
    assert "passed the barrier" not in result.stdout


def test_serial_world_is_one_rank():
    from driver.parallel import World

    world = World()  # pytest runs outside mpiexec: a singleton
    assert (world.size, world.rank, world.local_rank) == (1, 0, 0)
    assert world.share([1, 2, 3]) == [1, 2, 3]
    assert world.allgather("x") == ["x"]
    world.barrier()


def test_unexpected_error_in_one_rank_ends_the_run(tmp_path):
    """A job raising something other than a DriverError on rank 1 stops both ranks promptly."""
    recipe = write_recipe(tmp_path, task={"temperature_K": [400, 800], "steps": 200})
    script = tmp_path / "broken_job.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        import driver.runner
        from driver.cli import main

        original = driver.runner.run_job

        def run_job(job, *args, **kwargs):
            if job.name == "raw-T800K":  # rank 1's job
                raise RuntimeError("simulated crash in " + job.name)
            return original(job, *args, **kwargs)

        driver.runner.run_job = run_job
        sys.exit(main(["run", {str(recipe)!r}, "--out", {str(tmp_path / "out")!r}]))
    """))
    started = time.monotonic()
    result = _run([MPIEXEC, "-n", "2", sys.executable, str(script)], tmp_path, timeout=120)
    assert result.returncode != 0
    assert "simulated crash in raw-T800K" in result.stderr
    assert not (tmp_path / "out" / "summary.json").exists()  # no silent partial success
    assert time.monotonic() - started < 60


SHARED_TASKS = {
    # 1 displaced supercell + the perfect one: one structure per rank.
    # batched: false on both sides: `auto` picks by timing, and a batched call's float32 round-off
    # differs from one by one's, which is not what this test compares.
    "phonons": {"kind": "phonons", "supercell": [2, 2, 2], "mesh": [4, 4, 4], "band_points": 5, "batched": False},
    # 3 moving images per iteration: 2 on rank 0, 1 on rank 1; a few FIRE steps, not converged.
    "neb": {"kind": "neb", "vacancy_hop": LI2O_HOP, "n_images": 3, "batched": False,
            "relax_endpoints": False, "fmax_eV_A": 0.001, "max_steps": 4},
}


@pytest.mark.parametrize("kind", ["phonons", "neb"])
def test_shared_structures_over_two_ranks_match_serial(tmp_path, kind, li2o_cell):
    """run.share_structures: both ranks run each job, each evaluating part of its structures;
    rank 0's files equal a serial run's."""
    extra = {"structure": {"file": str(li2o_cell)}} if kind == "neb" else {}
    recipe = write_recipe(tmp_path, **extra, correction={"scale": 0.627}, compare=True,
                          task=SHARED_TASKS[kind], run={"share_structures": True})
    serial_out, parallel_out = tmp_path / "serial", tmp_path / "parallel"
    serial = _run([sys.executable, "-m", "driver", "run", str(recipe), "--out", str(serial_out)], tmp_path)
    parallel = _run([MPIEXEC, "-n", "2", sys.executable, "-m", "driver", "run", str(recipe),
                     "--out", str(parallel_out)], tmp_path)
    expected_rc = 1 if kind == "neb" else 0  # the NEB stops at max_steps: "not converged", exit 1
    assert serial.returncode == expected_rc, serial.stderr
    assert parallel.returncode == expected_rc, parallel.stderr
    assert parallel.stdout.count("Results in") == 1

    names = sorted(p.name for p in serial_out.iterdir() if p.is_file())
    assert sorted(p.name for p in parallel_out.iterdir() if p.is_file()) == names
    group = f"results/{kind}"
    for job in ("raw", "corrected"):
        with h5py.File(serial_out / f"{job}.h5", "r") as s, h5py.File(parallel_out / f"{job}.h5", "r") as p:
            assert p["parameters"].attrs["mpi_size"] == 2
            compared = [key for key in s[group] if key not in ("image_positions_A",)]
            assert compared
            for key in compared:
                np.testing.assert_allclose(p[group][key][()], s[group][key][()], rtol=0, atol=1e-8, err_msg=key)
    serial_jobs = json.loads((serial_out / "summary.json").read_text())["jobs"]
    parallel_jobs = json.loads((parallel_out / "summary.json").read_text())["jobs"]
    assert [(j["job"], j["status"]) for j in parallel_jobs] == [(j["job"], j["status"]) for j in serial_jobs]
    # Both ranks ran both jobs (without sharing, rank 1 would run only `corrected`).
    rank1 = (parallel_out / "logs" / "rank-1.log").read_text()
    assert "running raw" in rank1 and "running corrected" in rank1


def test_shared_structures_is_for_neb_and_phonons(tmp_path, capsys):
    from driver.cli import main

    recipe = write_recipe(tmp_path, run={"share_structures": True})
    assert main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "run.share_structures" in err and len(err.strip().splitlines()) == 1, err


def test_rank_and_size_come_from_mpi_under_a_pmi_launcher(tmp_path):
    """Hydra sets PMI_SIZE for each rank, as srun --mpi=pmi2 does: with mpi4py the launch is not
    refused, and rank and size are MPI's own."""
    script = tmp_path / "world.py"
    script.write_text("import os\nfrom driver.parallel import World\nw = World()\n"
                      "with open(f'rank-{w.rank}', 'w') as f:\n"
                      "    print(w.rank, w.size, w.local_rank, os.environ['PMI_SIZE'], file=f)\n")
    result = _run([MPIEXEC, "-n", "2", sys.executable, str(script)], tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [(tmp_path / f"rank-{r}").read_text() for r in (0, 1)] == ["0 2 0 2\n", "1 2 1 2\n"]


def test_launch_that_mpi_cannot_see_is_refused(tmp_path):
    """A launcher says 4 ranks, MPI sees one (no PMI server behind PMI_SIZE here, like Open MPI's
    mpirun starting the image's MPICH): every rank would run every job, so World() refuses."""
    result = subprocess.run([sys.executable, "-c", "from driver.parallel import World; World()"], cwd=tmp_path,
                            env={**_env(), "PMI_SIZE": "4", "PMI_RANK": "2"}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "started by a launcher with 4 ranks (PMI_SIZE) but MPI (MPICH" in result.stderr
    assert "srun --mpi=none" in result.stderr


def test_launcher_environment_checks():
    from driver.errors import InputError
    from driver.parallel import _refuse_launch_mpi_cannot_see, _refuse_mixed_command_lines

    for environ in ({}, {"PMI_SIZE": "1"}, {"OMPI_COMM_WORLD_SIZE": "1"}, {"SLURM_NTASKS": "4"}):
        _refuse_launch_mpi_cannot_see(have_mpi4py=True, environ=environ)  # srun --mpi=none: one run per task
        _refuse_launch_mpi_cannot_see(have_mpi4py=False, environ=environ)
    with pytest.raises(InputError, match="mpi4py is not installed"):
        _refuse_launch_mpi_cannot_see(have_mpi4py=False, environ={"PMI_SIZE": "4"})
    with pytest.raises(InputError, match=r"4 ranks \(OMPI_COMM_WORLD_SIZE\) but MPI .* sees one"):
        _refuse_launch_mpi_cannot_see(have_mpi4py=True, environ={"OMPI_COMM_WORLD_SIZE": "4"})
    _refuse_mixed_command_lines([["run", "a.yaml"], ["run", "a.yaml"]])
    with pytest.raises(InputError, match="different command lines"):
        _refuse_mixed_command_lines([["run", "a.yaml"], ["run", "b.yaml"]])


def test_ranks_joined_from_different_recipes_are_refused(tmp_path):
    """One recipe per task under a launcher that joins the tasks into one MPI world (srun with a
    PMI plugin; here Hydra's MPMD syntax): every rank stops with the same one-line input error."""
    a = write_recipe(tmp_path, "a.yaml")
    b = write_recipe(tmp_path, "b.yaml")
    driver = [sys.executable, "-m", "driver", "run"]
    result = _run([MPIEXEC, "-n", "1", *driver, str(a), "--out", str(tmp_path / "a"), ":",
                   "-n", "1", *driver, str(b), "--out", str(tmp_path / "b")], tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("MPI ranks were started with different command lines") == 2
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
