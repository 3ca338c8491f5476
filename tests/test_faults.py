"""Kill at any instant, lose nothing, resume exactly (driver.journal, driver.faults).

Every task kind is killed (SIGKILL: nothing runs at exit) at every write site it passes through,
`DRIVER_FAULT_AT=<site>:<n>`, and `driver run --resume` must reach the uninterrupted run's
trajectory, results and summary, bit for bit. The same after a kill while --resume rebuilds a
file, after a kill whose job file is left unreadable (a kill inside an HDF5 call), and after a
full disk (ENOSPC injected at a flush and at a checkpoint). Runs use ASE's EMT (and free Li for
the diffusion study) in real processes: a few seconds each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.build import bulk
from ase.io import write

from driver.faults import SITES
from tests.conftest import ROOT

CLI = ("import sys; from driver.registry import register; "
       "from tests.models.emt_family import FAMILY; register(FAMILY); "
       "from tests.models.free_family import FAMILY as FREE; register(FREE); "
       "from driver.cli import main; sys.exit(main(sys.argv[1:]))")
SIGKILLED = -9
COMPARED = ("particles", "observables", "results")  # /parameters holds times, /points and /checkpoint restart data
# What may differ: times, and model_calls (the calls made: a resumed band is evaluated once more).
TIMES = ("wall_time_s", "md_wall_time_s", "start_time", "end_time", "error", "model_calls")


def _cu(folder: Path) -> Path:
    atoms = bulk("Cu", "fcc", a=3.62, cubic=True).repeat((1, 1, 2))
    atoms.rattle(0.03, seed=3)
    write(folder / "Cu.extxyz", atoms)
    frames = []
    for seed in range(12):
        frame = atoms.copy()
        frame.rattle(0.05, seed=seed)
        frames.append(frame)
    write(folder / "frames.extxyz", frames)
    return folder / "Cu.extxyz"


def _free_li(folder: Path) -> Path:
    rng = np.random.default_rng(5)
    atoms = bulk("Cu", "sc", a=10 / 3).repeat(3) + Atoms("Li32", positions=rng.uniform(0, 10, (32, 3)))
    atoms.cell = [10.0] * 3
    atoms.pbc = True
    write(folder / "start.extxyz", atoms)
    return folder / "start.extxyz"


EMT = {"name": "emt", "dtype": "float64"}
KINDS = {
    "md": (_cu, EMT, {"kind": "md", "ensemble": "nvt_langevin", "timestep_fs": 2.0, "steps": 60,
                      "temperature_K": 500, "seed": 1}, {"write_every": 2, "flush_every": 3, "checkpoint_every": 10}),
    "neb": (lambda folder: (write(folder / "Cu.extxyz", bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)),
                            folder / "Cu.extxyz")[1], EMT,
            {"kind": "neb", "vacancy_hop": {"species": "Cu", "from": 1}, "n_images": 3, "fmax_eV_A": 0.05,
             "max_steps": 200, "checkpoint_every": 3}, {}),
    "relax": (_cu, EMT, {"kind": "relax", "cell": True, "fmax_eV_A": 0.01, "max_steps": 300}, {"checkpoint_every": 4}),
    "eos": (_cu, EMT, {"kind": "eos", "n_points": 5, "strain": 0.02, "fmax_eV_A": 0.05}, {}),
    "elastic": (_cu, EMT, {"kind": "elastic", "relax": {"fmax_eV_A": 0.05}, "normal_strains": [-0.01, 0.01],
                           "shear_strains": [-0.01, 0.01], "fmax_eV_A": 0.05}, {}),
    "phonons": (_cu, EMT, {"kind": "phonons", "supercell": [1, 1, 1], "batch_size": 2, "batched": False}, {}),
    "single_point": (_cu, EMT, {"kind": "single_point", "chunk_size": 2}, {}),
    "diffusion": (_free_li, {"name": "free_li", "dtype": "float64"},
                  {"kind": "diffusion", "species": ["Li"], "temperatures_K": [800], "friction_per_fs": 0.02,
                   "min_distance_A": 0.001, "equilibration": 0, "target": {"relative_error": 0.05},
                   "segment_ps": 0.2, "min_ps": 0.4, "max_ps": 0.6, "timestep_fs": 1.0, "seed": 3},
                  {"write_every": 10, "checkpoint_every": 50}),
}
# Where each kind is killed: every site, at a pass in the middle of its job where it has several.
PASSES = {"journal.record": 6, "h5.frame": 3, "h5.flush": 2, "h5.tree": 2, "h5.close": 1, "journal.remove": 1,
          "summary": 1}
TRAJECTORIES = ("md", "diffusion")  # the others store one frame (their start), never a flush of frames


def sites_of(kind: str) -> dict[str, int]:
    if kind in TRAJECTORIES:
        return PASSES
    return {**{site: n for site, n in PASSES.items() if site != "h5.flush"}, "h5.frame": 1}


def _recipe(folder: Path, kind: str) -> Path:
    structure, model, task, output = KINDS[kind]
    path = structure(folder)
    if kind == "single_point":
        task = {**task, "frames": str(folder / "frames.extxyz")}
    recipe = {"name": f"faults-{kind}", "structure": {"file": str(path)}, "model": model, "task": task,
              "output": {"directory": str(folder / "out"), **output}}
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return folder / "recipe.yaml"


def _driver(*args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DRIVER_FAULT_AT": fault} if fault else {k: v for k, v in os.environ.items()
                                                                 if k != "DRIVER_FAULT_AT"}
    return subprocess.run([sys.executable, "-c", CLI, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)


def _tree(path: Path) -> dict[str, object]:
    """Every dataset and attribute under COMPARED, by name."""
    found: dict[str, object] = {}
    with h5py.File(path, "r") as f:
        def visit(name: str, item) -> None:
            if isinstance(item, h5py.Dataset):
                found[name] = item[()]
            for key, value in item.attrs.items():
                if key not in TIMES:
                    found[f"{name}@{key}"] = value
        for top in COMPARED:
            if top in f:
                visit(top, f[top])
                f[top].visititems(visit)
    return found


def _summary(out: Path) -> list[dict]:
    jobs = json.loads((out / "summary.json").read_text())["jobs"]
    return [{key: value for key, value in job.items() if key not in TIMES} for job in jobs]


def assert_same_run(whole: Path, resumed: Path) -> None:
    a, b = _summary(whole), _summary(resumed)
    differ = [(job.get("job"), key, job.get(key), other.get(key)) for job, other in zip(a, b, strict=False)
              for key in job.keys() | other.keys() if job.get(key) != other.get(key)]
    assert len(a) == len(b) and not differ, f"summary entries differ (job, key, whole, resumed): {differ}"
    files = sorted(p.name for p in whole.glob("*.h5"))
    assert sorted(p.name for p in resumed.iterdir() if p.name != "driver.log") == sorted(
        p.name for p in whole.iterdir() if p.name != "driver.log"), "files differ (a journal left behind?)"
    for name in files:
        a, b = _tree(whole / name), _tree(resumed / name)
        assert sorted(a) == sorted(b), name
        for key in a:
            assert _equal(a[key], b[key]), f"{name}: {key}: {a[key]} != {b[key]}"


def _equal(a: object, b: object) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    return np.array_equal(a, b)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Each kind's uninterrupted run, once for all its kills."""
    made: dict[str, tuple[Path, Path, int]] = {}

    def get(kind: str) -> tuple[Path, Path, int]:
        if kind not in made:
            folder = tmp_path_factory.mktemp(f"whole-{kind}")
            recipe = _recipe(folder, kind)
            done = _driver("-q", "run", str(recipe))
            assert done.returncode in (0, 1), done.stderr  # 1: a study that did not reach its target
            made[kind] = (recipe, folder / "out", done.returncode)
        return made[kind]

    return get


@pytest.mark.parametrize(("kind", "site"), [(kind, site) for kind in KINDS for site in sites_of(kind)])
def test_killed_at_every_write_site_resumes_to_the_uninterrupted_run(tmp_path, uninterrupted, kind, site):
    recipe, whole, code = uninterrupted(kind)
    out = tmp_path / "out"
    killed = _driver("-q", "run", str(recipe), "--out", str(out), fault=f"{site}:{sites_of(kind)[site]}")
    assert killed.returncode == SIGKILLED, f"{site} not reached: {killed.stderr[-500:]}"
    assert not (out / "summary.json").exists() or site == "summary"
    resumed = _driver("-q", "run", str(recipe), "--out", str(out), "--resume")
    assert resumed.returncode == code, resumed.stderr
    assert_same_run(whole, out)


@pytest.mark.parametrize("kind", ["md", "phonons", "neb", "diffusion"])
def test_killed_again_while_resume_rebuilds_the_file(tmp_path, uninterrupted, kind):
    recipe, whole, code = uninterrupted(kind)
    out = tmp_path / "out"
    assert _driver("-q", "run", str(recipe), "--out", str(out), fault="journal.record:8").returncode == SIGKILLED
    again = _driver("-q", "run", str(recipe), "--out", str(out), "--resume", fault="recover:1")
    assert again.returncode == SIGKILLED, again.stderr
    assert any(p.name.endswith(".rebuild") for p in out.iterdir())  # the half-rebuilt copy, never the file
    resumed = _driver("-q", "run", str(recipe), "--out", str(out), "--resume")
    assert resumed.returncode == code, resumed.stderr
    assert_same_run(whole, out)


@pytest.mark.parametrize("damage", ["truncated", "scribbled", "removed"])
def test_a_job_file_left_unreadable_by_the_kill_is_rebuilt(tmp_path, uninterrupted, damage):
    """A kill inside an HDF5 call can leave the file unopenable ("bad object header version
    number"); the journal holds everything it held."""
    recipe, whole, code = uninterrupted("md")
    out = tmp_path / "out"
    assert _driver("-q", "run", str(recipe), "--out", str(out), fault="h5.flush:5").returncode == SIGKILLED
    h5 = out / "raw-T500K.h5"
    if damage == "truncated":
        os.truncate(h5, h5.stat().st_size // 2)
    elif damage == "scribbled":
        with open(h5, "r+b") as handle:
            handle.seek(0)
            handle.write(b"\0" * 4096)
    else:
        h5.unlink()
    inspected = _driver("inspect", str(h5))
    if damage != "removed":
        assert inspected.returncode == 2 and "--resume` rebuilds it from raw-T500K.h5.journal" in inspected.stderr
    resumed = _driver("-q", "run", str(recipe), "--out", str(out), "--resume")
    assert resumed.returncode == code, resumed.stderr
    assert_same_run(whole, out)


@pytest.mark.parametrize("fault", ["h5.flush:4:enospc", "journal.record:9:enospc", "h5.tree:3:enospc"])
def test_a_full_disk_is_one_line_keeps_the_last_checkpoint_and_resumes(tmp_path, uninterrupted, fault):
    recipe, whole, code = uninterrupted("md")
    out = tmp_path / "out"
    full = _driver("-q", "run", str(recipe), "--out", str(out), fault=fault)
    errors = [line for line in full.stderr.splitlines() if line.startswith("error")]
    assert full.returncode == 1 and len(errors) == 1 and "Traceback" not in full.stderr, full.stderr
    assert "No space left on device" in errors[0] and " MiB free on " in errors[0], errors
    assert "raw-T500K.h5" in errors[0] and "--resume" in errors[0], errors
    assert json.loads((out / "summary.json").read_text())["jobs"][0]["status"] == "interrupted"
    resumed = _driver("-q", "run", str(recipe), "--out", str(out), "--resume")
    assert resumed.returncode == code, resumed.stderr
    assert_same_run(whole, out)


def test_fault_hook_refuses_a_site_it_does_not_know(tmp_path, uninterrupted):
    recipe, _, _ = uninterrupted("md")
    bad = _driver("-q", "run", str(recipe), "--out", str(tmp_path / "out"), fault="h5.nowhere:1")
    assert bad.returncode != 0 and "DRIVER_FAULT_AT='h5.nowhere:1'" in bad.stderr
    assert set(PASSES) | {"recover"} == set(SITES)


@pytest.mark.parametrize("fault", ["journal.record:4", "h5.tree:1"])
def test_a_study_with_a_density_stage_resumes_to_the_same_cell_and_numbers(tmp_path, fault):
    """task.density_ps: the NPT stage stores nothing, so a job killed after it (before or after its
    first checkpoint) runs it again, deterministically, and reaches the uninterrupted cell."""
    write(tmp_path / "Cu.extxyz", bulk("Cu", "fcc", a=3.59, cubic=True).repeat(2))
    recipe = {"name": "density", "structure": {"file": str(tmp_path / "Cu.extxyz")}, "model": EMT,
              "task": {"kind": "diffusion", "species": ["Cu"], "temperatures_K": [900], "density_ps": 0.3,
                       "pdamp_fs": 200.0, "segment_ps": 0.1, "min_ps": 0.2, "max_ps": 0.3, "timestep_fs": 2.0,
                       "equilibration": 0, "seed": 5},
              "output": {"directory": str(tmp_path / "out"), "write_every": 5, "checkpoint_every": 25}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    whole = _driver("-q", "run", str(path), "--out", str(tmp_path / "whole"))
    assert whole.returncode in (0, 1), whole.stderr
    assert _driver("-q", "run", str(path), "--out", str(tmp_path / "out"), fault=fault).returncode == SIGKILLED
    resumed = _driver("-q", "run", str(path), "--out", str(tmp_path / "out"), "--resume")
    assert resumed.returncode == whole.returncode, resumed.stderr
    assert_same_run(tmp_path / "whole", tmp_path / "out")
