"""An element outside the loaded model's table is refused before any job runs, with one line that
names the file and the element (exit 2), for every family, in the structure, a single-point frames
file and `driver fit`'s labels; the library's own error was a shape mismatch deep in the model."""

from __future__ import annotations

import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from driver.cli import main
from tests.conftest import write_recipe

MODELS = {  # family -> (recipe model section, an element it has no parameters for)
    "chgnet": (lambda request: {"name": "chgnet"}, "Og"),  # Z <= 94
    "m3gnet": (lambda request: {"name": "m3gnet", "models_dir": str(request.getfixturevalue("shared_models_dir"))},
               "Og"),  # 89 elements, H..Pu
    # the tests' small MACE knows Li, N, O, Si, P, Fe only
    "mace": (lambda request: {"name": "mace-mp-0", "checkpoint": str(request.getfixturevalue("small_mace_path"))},
             "Cu"),
}


def _with(symbol: str) -> Atoms:
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms[3].symbol = symbol
    return atoms


def _error(capsys) -> str:
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize("family", sorted(MODELS))
def test_a_structure_with_an_unknown_element_is_refused_before_any_job(family, request, tmp_path, capsys):
    model, foreign = MODELS[family]
    structure = tmp_path / "foreign.extxyz"
    write(structure, _with(foreign))
    recipe = write_recipe(tmp_path, structure={"file": str(structure)}, model=model(request))
    assert main(["run", str(recipe)]) == 2
    error = _error(capsys)
    assert f"{structure}: structure.file: {foreign} not in the element table of {model(request)['name'].split('-')[0]}" in error
    assert not (tmp_path / "out" / "raw-T500K.h5").exists()
    # The same recipe on a structure the model knows runs.
    write(structure, _with("Si"))
    assert main(["run", str(recipe), "--overwrite"]) == 0


def test_single_point_frames_and_fit_labels_are_checked_frame_by_frame(tmp_path, capsys):
    frames = []
    for symbol in ("Si", "Og"):
        atoms = _with(symbol)
        atoms.calc = SinglePointCalculator(atoms, energy=-40.0, forces=[[0.1, 0.0, 0.0]] * len(atoms))
        frames.append(atoms)
    path = tmp_path / "frames.extxyz"
    write(path, frames)
    recipe = write_recipe(tmp_path, task={"kind": "single_point", "frames": str(path)})
    assert main(["run", str(recipe)]) == 2
    assert f"{path}: task.frames: frame 1: Og not in the element table of chgnet" in _error(capsys)
    assert main(["fit", "--model", "chgnet", "--labels", str(path)]) == 2
    assert "Og not in the element table of chgnet" in _error(capsys)


@pytest.mark.parametrize("family", ["chgnet", "m3gnet"])
def test_validate_refuses_an_unknown_element_without_loading_the_model(family, request, tmp_path, capsys,
                                                                       monkeypatch):
    """CHGNet's table (H..Pu) and M3GNet's (model.json's element_types) are known from the files;
    MACE's only once its pickled model loads (at `driver run`, above)."""
    import driver.runner

    monkeypatch.setattr(driver.runner, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    model, foreign = MODELS[family]
    structure = tmp_path / "foreign.extxyz"
    write(structure, _with(foreign))
    recipe = write_recipe(tmp_path, structure={"file": str(structure)}, model=model(request))
    assert main(["validate", str(recipe)]) == 2
    assert f"{structure}: structure.file: {foreign} not in the element table of {family}" in _error(capsys)
    frames = tmp_path / "frames.extxyz"
    write(frames, [_with("Si"), _with(foreign)])
    recipe = write_recipe(tmp_path, task={"kind": "single_point", "frames": str(frames)}, model=model(request))
    assert main(["validate", str(recipe)]) == 2
    assert f"{frames}: task.frames: frame 1: {foreign} not in the element table of {family}" in _error(capsys)
    mace, _ = MODELS["mace"]
    write(structure, _with("Cu"))  # the small MACE has no Cu: validate cannot know before it loads
    recipe = write_recipe(tmp_path, structure={"file": str(structure)}, model=mace(request))
    assert main(["validate", str(recipe)]) == 0
