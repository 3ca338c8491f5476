"""Damaged files for every command that reads one: a run's job files and summary.json (inspect,
compare, run --resume), frames files (single points) and labels (fit), each truncated at several
points, emptied, overwritten with junk in the middle, or given wrong shapes. Every case ends with
an exit code (2 for a bad file; 0 where the command can still do its work, e.g. --resume
rewriting a job whose damaged file it may replace), at most one `error:` line naming the file, and
never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.io import write

from driver.cli import main
from tests.conftest import emt_recipe, write_recipe

TASK = {"kind": "md", "ensemble": "nve", "timestep_fs": 2.0, "steps": 6, "temperature_K": 300}
FRACTIONS = (0.0, 0.05, 0.3, 0.6, 0.95)


def truncated(fraction: float):
    def damage(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[:int(fraction * len(data))])
    damage.__name__ = f"truncated to {fraction:.0%}"
    return damage


def junk_in_the_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 512] = bytes(range(256)) * 2
    path.write_bytes(bytes(data[:len(data)]))


def junk_everywhere(path: Path) -> None:
    path.write_bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())


DAMAGES = [truncated(f) for f in FRACTIONS] + [junk_in_the_middle, junk_everywhere]
IDS = [d.__name__ for d in DAMAGES]


def assert_clean_exit(code: int, err: str, path: Path, allowed=(1, 2)) -> None:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code in (0, *allowed), err
    if code != 0:
        assert len(errors) == 1, err
        assert path.name in errors[0] or str(path.parent) in errors[0], err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished two-job EMT MD run (raw and corrected), made once for the module."""
    from driver.registry import register, unregister
    from tests.models.emt_family import FAMILY

    folder = tmp_path_factory.mktemp("run")
    register(FAMILY)
    try:
        recipe = emt_recipe(folder, TASK, output={"directory": str(folder / "out"), "write_every": 2,
                                                  "checkpoint_every": 2})
        assert main(["run", str(recipe)]) == 0
    finally:
        unregister(FAMILY.name)
    return folder


def copy_run(finished_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "copy"
    shutil.copytree(finished_run, folder)
    recipe = folder / "recipe.yaml"
    text = recipe.read_text().replace(str(finished_run), str(folder))
    recipe.write_text(text)
    return folder, recipe


@pytest.mark.parametrize("damage", DAMAGES, ids=IDS)
def test_inspect_and_compare_a_damaged_job_file(finished_run, tmp_path, capsys, damage):
    folder, _ = copy_run(finished_run, tmp_path)
    job = folder / "out" / "raw-T300K.h5"
    damage(job)
    capsys.readouterr()
    assert_clean_exit(main(["inspect", str(job)]), capsys.readouterr().err, job, allowed=(2,))
    assert_clean_exit(main(["compare", str(folder / "out")]), capsys.readouterr().err, job, allowed=(2,))


@pytest.mark.parametrize("damage", DAMAGES, ids=IDS)
def test_resume_with_a_damaged_job_file(finished_run, tmp_path, capsys, damage, emt_family):
    folder, recipe = copy_run(finished_run, tmp_path)
    job = folder / "out" / "corrected-T300K.h5"
    damage(job)
    capsys.readouterr()
    assert_clean_exit(main(["run", str(recipe), "--resume"]), capsys.readouterr().err, job, allowed=(2,))


@pytest.mark.parametrize("damage", DAMAGES, ids=IDS)
def test_compare_and_resume_with_a_damaged_summary(finished_run, tmp_path, capsys, damage, emt_family):
    folder, recipe = copy_run(finished_run, tmp_path)
    summary = folder / "out" / "summary.json"
    damage(summary)
    capsys.readouterr()
    assert_clean_exit(main(["compare", str(folder / "out")]), capsys.readouterr().err, summary, allowed=(2,))
    assert_clean_exit(main(["run", str(recipe), "--resume"]), capsys.readouterr().err, summary, allowed=(2,))


def test_compare_with_summary_entries_of_the_wrong_shape(finished_run, tmp_path, capsys):
    folder, _ = copy_run(finished_run, tmp_path)
    summary = folder / "out" / "summary.json"
    data = json.loads(summary.read_text())
    for broken in ({**data, "jobs": [{"job": 3}]}, {**data, "jobs": [[1, 2]]}, [1, 2, 3], {**data, "jobs": None}):
        summary.write_text(json.dumps(broken))
        capsys.readouterr()
        assert_clean_exit(main(["compare", str(folder / "out")]), capsys.readouterr().err, summary, allowed=(2,))


def frames_of(symbol: str, n: int = 3):
    frames = []
    for seed in range(n):
        atoms = bulk(symbol, cubic=True)
        atoms.rattle(0.05, seed=seed)
        frames.append(atoms)
    return frames


@pytest.mark.parametrize("damage", DAMAGES, ids=IDS)
def test_single_point_frames_file_damaged(tmp_path, capsys, damage):
    path = tmp_path / "frames.extxyz"
    write(path, frames_of("Si"))
    damage(path)
    recipe = write_recipe(tmp_path, task={"kind": "single_point", "frames": str(path)})
    capsys.readouterr()
    code = main(["validate", str(recipe)])
    assert_clean_exit(code, capsys.readouterr().err, path, allowed=(2,))


@pytest.mark.parametrize("damage", DAMAGES, ids=IDS)
def test_fit_labels_damaged(tmp_path, capsys, damage, emt_family):
    path = tmp_path / "labels.extxyz"
    frames = frames_of("Cu")  # EMT's elements
    for atoms in frames:
        atoms.arrays["REF_forces"] = np.ones((len(atoms), 3))
        atoms.info["REF_energy"] = -40.0
    write(path, frames)
    damage(path)
    capsys.readouterr()
    code = main(["fit", "--model", "emt", "--labels", str(path), "--out", str(tmp_path / "fit")])
    assert_clean_exit(code, capsys.readouterr().err, path, allowed=(1, 2))


def test_labels_with_forces_of_the_wrong_shape(tmp_path, capsys, emt_family):
    path = tmp_path / "labels.extxyz"
    atoms = frames_of("Cu", 1)[0]
    atoms.arrays["REF_forces"] = np.ones((len(atoms), 3))
    write(path, atoms)
    text = path.read_text().replace("REF_forces:R:3", "REF_forces:R:2")
    lines = text.splitlines()
    lines[2:] = [" ".join(line.split()[:-1]) for line in lines[2:]]  # two force columns, not three
    path.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    code = main(["fit", "--model", "emt", "--labels", str(path), "--out", str(tmp_path / "fit")])
    assert_clean_exit(code, capsys.readouterr().err, path, allowed=(2,))


@pytest.mark.parametrize("damage", DAMAGES, ids=IDS)
def test_structure_file_damaged(tmp_path, capsys, damage):
    path = tmp_path / "structure.extxyz"
    write(path, frames_of("Si", 1)[0])
    damage(path)
    capsys.readouterr()
    code = main(["validate", str(write_recipe(tmp_path, structure={"file": str(path)}))])
    assert_clean_exit(code, capsys.readouterr().err, path, allowed=(2,))
