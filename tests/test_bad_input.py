"""Issue 16's cases: wrong types, absurd magnitudes, tasks that do not fit the structure, YAML
bombs and the other commands' inputs all end as exit 2 and one line, from `driver validate`
(before any model loads) as from `driver run`."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import yaml
from ase.build import bulk, molecule
from ase.io import write

from driver.cli import main
from tests.conftest import ROOT, SI_CIF, write_recipe

LI2O = ROOT / "recipes" / "structures" / "Li2O_antifluorite.cif"


def validate(capsys, recipe) -> tuple[int, str]:
    start = time.monotonic()
    code = main(["validate", str(recipe)])
    err = capsys.readouterr().err
    assert time.monotonic() - start < 20
    assert "Traceback" not in err
    return code, err


def assert_one_line_error(capsys, recipe, expected: str) -> None:
    code, err = validate(capsys, recipe)
    assert code == 2, err
    assert err.count("\n") == 1, err
    assert expected in err, err


TYPES_AND_MAGNITUDES = {
    "steps true": ({"task": {"steps": True}}, "task.steps: must be an integer, got True"),
    "timestep true": ({"task": {"timestep_fs": True}}, "task.timestep_fs: must be a number, got True"),
    "seed true": ({"task": {"seed": True}}, "task.seed: must be an integer, got True"),
    "scale true": ({"correction": {"scale": True}}, "correction.scale: must be a number, got True"),
    "write_every true": ({"output": {"write_every": True}}, "output.write_every: must be an integer, got True"),
    "flush_every true": ({"output": {"flush_every": True}}, "output.flush_every: must be an integer, got True"),
    "checkpoint_every true": ({"output": {"checkpoint_every": True}}, "output.checkpoint_every: must be an integer"),
    "compare 1": ({"compare": 1, "correction": {"scale": 0.8}}, "compare: must be true or false, got 1"),
    "forces 0": ({"output": {"forces": 0}}, "output.forces: must be true or false, got 0"),
    "steps 10.5": ({"task": {"steps": 10.5}}, "task.steps: must be an integer, got 10.5"),
    "steps 10.0": ({"task": {"steps": 10.0}}, "task.steps: must be an integer, got 10.0"),
    "steps as text": ({"task": {"steps": "10"}}, "task.steps: must be an integer, got '10'"),
    "timestep 1e30": ({"task": {"timestep_fs": 1e30}},
                      "task.timestep_fs: must be <= 10, got 1e+30 (allowed: 0 < timestep_fs <= 10 fs)"),
    "temperature 1e30": ({"task": {"temperature_K": 1e30}}, "task.temperature_K: must be <= 100000, got 1e+30"),
    "steps 1e30": ({"task": {"steps": 1e30}}, "task.steps: must be an integer, got 1e+30"),
    "steps 1e12": ({"task": {"steps": 10**12}}, "task.steps: must be <= 1000000000, got 1000000000000"),
    "scale 1e30": ({"correction": {"scale": 1e30}}, "correction.scale: must be <= 5, got 1e+30 (allowed: 0 < scale <= 5)"),
    "write_every huge": ({"output": {"write_every": 10**30}}, "output.write_every: must be <= 1000000000"),
    "flush_every huge": ({"output": {"flush_every": 10**30}}, "output.flush_every: must be <= 1000000"),
    "checkpoint_every huge": ({"output": {"checkpoint_every": 10**30}}, "output.checkpoint_every: must be <= 1000000000"),
    "write_every past steps": ({"output": {"write_every": 50}}, "output.write_every: must be <= task.steps (10), got 50"),
    "n_images": ({"task": {"kind": "neb", "vacancy_hop": {"species": "Si", "from": 0}, "n_images": 1000}},
                 "task.n_images: must be <= 100, got 1000"),
    "displacement": ({"task": {"kind": "phonons", "supercell": [1, 1, 1], "displacement_A": 1.0}},
                     "task.displacement_A: must be <= 0.2, got 1.0"),
    "interstitial outside the cell": ({"task": {"kind": "neb", "interstitial_hop": {
        "species": "Li", "from": [1.5, 0, 0], "to": [0.5, 0.5, 0.5]}}}, "task.interstitial_hop.from.0: must be <= 1, got 1.5"),
    "huge structure supercell": ({"structure": {"supercell": [100, 100, 100]}},
                                 "structure.supercell: [100, 100, 100] makes 8000000 atoms, more than structure.max_atoms"),
}


@pytest.mark.parametrize("case", sorted(TYPES_AND_MAGNITUDES))
def test_types_and_bounds(tmp_path, capsys, case):
    sections, expected = TYPES_AND_MAGNITUDES[case]
    assert_one_line_error(capsys, write_recipe(tmp_path, **sections), expected)


def test_yaml_12_floats_are_numbers(tmp_path, capsys):
    """`1e30` is a string to PyYAML (YAML 1.1) and was coerced; now it is the number it looks like."""
    recipe = write_recipe(tmp_path)
    recipe.write_text(recipe.read_text().replace("timestep_fs: 2.0", "timestep_fs: 1e30"))
    assert_one_line_error(capsys, recipe, "task.timestep_fs: must be <= 10, got 1e+30")
    recipe.write_text(recipe.read_text().replace("timestep_fs: 1e30", "timestep_fs: 2e0"))
    assert validate(capsys, recipe)[0] == 0


def test_raised_max_atoms_lets_a_big_structure_through(tmp_path, capsys):
    recipe = write_recipe(tmp_path, structure={"supercell": [3, 3, 3], "max_atoms": 200})
    assert_one_line_error(capsys, recipe, "makes 216 atoms, more than structure.max_atoms = 200")
    assert validate(capsys, write_recipe(tmp_path, structure={"supercell": [3, 3, 3], "max_atoms": 216}))[0] == 0


def test_large_timestep_and_scale_warn_but_validate(tmp_path, capsys, caplog):
    recipe = write_recipe(tmp_path, task={"timestep_fs": 7.0}, correction={"scale": 2.0})
    assert validate(capsys, recipe)[0] == 0
    assert "timestep_fs = 7.0 fs is outside the usual ..5 fs" in caplog.text
    assert "scale = 2.0 is outside the usual 0.3..1.5" in caplog.text


def _squeezed_si(tmp_path):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.positions[1] = atoms.positions[0] + [0.01, 0, 0]
    path = tmp_path / "squeezed.extxyz"
    write(path, atoms)
    return path


TASK_VS_STRUCTURE = {
    "vacancy hop of a species not there": (
        {"task": {"kind": "neb", "vacancy_hop": {"species": "Li", "from": 0}}}, "task.vacancy_hop.from: atom 0 is Si, not Li"),
    "vacancy hop from a site not there": (
        {"task": {"kind": "neb", "vacancy_hop": {"species": "Si", "from": 999}}},
        "task.vacancy_hop.from: site 999 does not exist (8 atoms)"),
    "vacancy hop to a site not there": (
        {"task": {"kind": "neb", "vacancy_hop": {"species": "Si", "from": 0, "to": 8}}}, "task.vacancy_hop.to: site 8"),
    "interstitial onto an atom": (
        {"task": {"kind": "neb", "interstitial_hop": {"species": "Li", "from": [0, 0, 0], "to": [0.5, 0.5, 0.5]}}},
        "task: the initial NEB endpoint's: atoms 0 and 8 are 0.000 Å apart, closer than min_distance_A = 0.5 Å"),
    "phonon supercell too large": (
        {"task": {"kind": "phonons", "supercell": [20, 20, 20]}},
        "task.supercell: the phonon supercell [[20, 0, 0], [0, 20, 0], [0, 0, 20]] has 64000 atoms, more than"),
    "phonon supercell length too large": (
        {"task": {"kind": "phonons", "supercell_min_length_A": 150}}, "task.supercell_min_length_A: the phonon supercell"),
}


@pytest.mark.parametrize("case", sorted(TASK_VS_STRUCTURE))
def test_task_that_does_not_fit_the_structure(tmp_path, capsys, case):
    sections, expected = TASK_VS_STRUCTURE[case]
    assert_one_line_error(capsys, write_recipe(tmp_path, **sections), expected)


def test_atoms_too_close_in_the_start(tmp_path, capsys):
    recipe = write_recipe(tmp_path, structure={"file": str(_squeezed_si(tmp_path))})
    assert_one_line_error(capsys, recipe, "structure: the starting structure's: atoms 0 and 1 are 0.010 Å apart, "
                                          "closer than min_distance_A = 0.5 Å")
    assert validate(capsys, write_recipe(tmp_path, structure={"file": str(_squeezed_si(tmp_path))},
                                         task={"min_distance_A": 0.005}))[0] == 0


def test_neb_final_endpoint_with_other_atoms(tmp_path, capsys):
    final = tmp_path / "final.extxyz"
    write(final, bulk("Si", "diamond", a=5.43, cubic=True)[:7])
    recipe = write_recipe(tmp_path, task={"kind": "neb", "final": str(final)})
    assert_one_line_error(capsys, recipe, "task.final: atoms differ from the initial structure in number or order")


def test_neb_final_endpoint_too_close(tmp_path, capsys):
    recipe = write_recipe(tmp_path, task={"kind": "neb", "final": str(_squeezed_si(tmp_path))})
    assert_one_line_error(capsys, recipe, "task: the final NEB endpoint's: atoms 0 and 1 are 0.010 Å apart")


def test_phonons_and_npt_need_a_periodic_structure(tmp_path, capsys):
    water = tmp_path / "water.xyz"
    write(water, molecule("H2O"))
    assert_one_line_error(capsys, write_recipe(tmp_path, structure={"file": str(water)},
                                               task={"kind": "phonons", "supercell": [1, 1, 1]}),
                          "task.kind: phonons needs a structure periodic in all three directions")
    assert_one_line_error(capsys, write_recipe(tmp_path, structure={"file": str(water)}, task={"ensemble": "npt_mtk"}),
                          "task.ensemble: npt_mtk changes the cell under pressure")


@pytest.mark.parametrize("record, expected", [
    ({"name": "chgnet", "variant": "0.2.0"}, "model.variant: fitted for '0.2.0', but the recipe's model is '0.3.0'"),
    ({"name": "chgnet", "checkpoint": "/somewhere/finetuned.pth.tar"},
     "model.checkpoint: fitted for checkpoint /somewhere/finetuned.pth.tar, but the recipe's model runs the pretrained"),
])
def test_correction_file_for_another_model(tmp_path, capsys, record, expected):
    (tmp_path / "correction.yaml").write_text(yaml.safe_dump({"softening_scale": 0.8, "model": record}))
    recipe = write_recipe(tmp_path, model={"name": "chgnet", "variant": "0.3.0"}, correction={"file": "correction.yaml"})
    assert_one_line_error(capsys, recipe, expected)


def test_correction_file_for_other_weights(tmp_path, capsys):
    weights = tmp_path / "finetuned.model"
    weights.write_bytes(b"weights")
    (tmp_path / "correction.yaml").write_text(yaml.safe_dump({"softening_scale": 0.8, "model": {
        "name": "mace-mp-0", "checkpoint": str(weights), "weights_sha256": "0" * 64}}))
    recipe = write_recipe(tmp_path, model={"name": "mace-mp-0", "checkpoint": str(weights)},
                          correction={"file": "correction.yaml"})
    assert_one_line_error(capsys, recipe, "model.weights_sha256: fitted for weights 000000000000…")


BILLION_LAUGHS = "\n".join(["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                           + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)])


@pytest.mark.parametrize("text, expected", [
    (BILLION_LAUGHS, "YAML syntax error: expands to more than 100000 values"),
    ("base: &b {x: 1}\n" + "".join(f"k{i}: *b\n" for i in range(101)), "more than 100 alias uses"),
    ("a: &a [*a]\n", "refers to itself through an alias"),
    ("a: " + "[" * 200 + "]" * 200 + "\n", "nested deeper than 64 levels"),
])
def test_yaml_bombs_are_refused_at_once(tmp_path, capsys, text, expected):
    assert len(text) < 2000
    for _what, path in (("recipe", tmp_path / "bomb.yaml"), ("correction", tmp_path / "correction.yaml")):
        path.write_text(text)
    assert_one_line_error(capsys, tmp_path / "bomb.yaml", expected)
    recipe = write_recipe(tmp_path, correction={"file": "correction.yaml"})
    assert_one_line_error(capsys, recipe, f"{tmp_path / 'correction.yaml'}: ")


def test_oversized_recipe_is_refused_unread(tmp_path, capsys):
    recipe = write_recipe(tmp_path)
    recipe.write_text(recipe.read_text() + "#" * (1 << 20) + "\n")
    assert_one_line_error(capsys, recipe, "recipe file larger than 1 MiB")


def test_binary_recipe_is_one_line(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(b"\x89HDF\r\n\x1a\n\x00\xff\xfe")
    code, err = validate(capsys, recipe)
    assert code == 2 and err.count("\n") == 1


def test_validate_refuses_what_run_refuses_before_the_model(tmp_path, capsys, monkeypatch):
    """The runner runs the same checks before loading the model: the model is never loaded."""
    import driver.runner

    monkeypatch.setattr(driver.runner, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    recipe = write_recipe(tmp_path, task={"kind": "neb", "vacancy_hop": {"species": "Li", "from": 0}})
    assert main(["run", str(recipe)]) == 2
    assert "task.vacancy_hop.from: atom 0 is Si, not Li" in capsys.readouterr().err


# The other commands' inputs.

def test_inspect_non_hdf5(tmp_path, capsys):
    for path in (tmp_path / "notes.h5", tmp_path):
        if path != tmp_path:
            path.write_text("not hdf5\n")
        assert main(["inspect", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not a readable HDF5 file" in err


@pytest.mark.parametrize("content, expected", [
    (None, "not found; is"),
    ("{not json", "not a driver summary"),
    (json.dumps({"jobs": "raw"}), "its 'jobs' must be a list of job entries"),
    (json.dumps({"jobs": [{"job": "raw", "file": "raw.h5", "status": "completed"}]}), "not a readable HDF5 file"),
])
def test_compare_on_a_folder_that_is_not_a_run(tmp_path, capsys, content, expected):
    if content is not None:
        (tmp_path / "summary.json").write_text(content)
        (tmp_path / "raw.h5").write_text("not hdf5\n")
    assert main(["compare", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err
    assert main(["compare", str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_resume_on_a_folder_from_another_recipe(tmp_path, capsys, emt_family):
    from tests.conftest import emt_recipe

    task = {"kind": "md", "ensemble": "nve", "timestep_fs": 2.0, "steps": 4, "temperature_K": 300}
    first = emt_recipe(tmp_path, task, output={"directory": str(tmp_path / "out"), "write_every": 2})
    assert main(["run", str(first)]) == 0
    other = emt_recipe(tmp_path, {**task, "temperature_K": 300, "seed": 5},
                       output={"directory": str(tmp_path / "out"), "write_every": 2})
    capsys.readouterr()
    assert main(["run", str(other), "--resume"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "written by a different recipe (task.seed differs)" in errors[0]


def test_shipped_structure_still_validates(tmp_path, capsys):
    assert validate(capsys, write_recipe(tmp_path, structure={"file": str(SI_CIF)}))[0] == 0


def test_correction_file_scale_is_bounded_like_the_recipes(tmp_path, capsys):
    (tmp_path / "correction.yaml").write_text("softening_scale: 1.0e+30\n")
    recipe = write_recipe(tmp_path, correction={"file": "correction.yaml"})
    assert_one_line_error(capsys, recipe, "softening_scale: must be <= 5, got 1e+30")


def test_a_warning_never_adds_a_line_to_an_error(tmp_path, capsys, caplog):
    recipe = write_recipe(tmp_path, task={"timestep_fs": 7.0, "steps": 0})
    assert_one_line_error(capsys, recipe, "task.steps: must be >= 1, got 0")
    assert "timestep_fs" not in caplog.text  # logged (to stderr) only for a recipe that validates


@pytest.mark.parametrize("broken", ["position", "cell"])
def test_non_finite_geometry_is_refused_at_validate_naming_the_atom(tmp_path, capsys, broken):
    from ase.build import bulk
    from ase.io import write

    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    if broken == "position":
        atoms.positions[3, 1] = np.nan
    else:
        atoms.cell[2, 2] = np.inf
    path = tmp_path / "broken.extxyz"
    write(path, atoms)
    expected = "atom 3 (Si) has a non-finite position" if broken == "position" else "cell vector 2 is not finite"
    assert_one_line_error(capsys, write_recipe(tmp_path, structure={"file": str(path)}),
                          f"{path}: structure.file: {expected}")


def test_a_frames_file_with_a_nan_position_is_refused_naming_the_frame(tmp_path, capsys):
    from ase.build import bulk
    from ase.io import write

    frames = [bulk("Si", "diamond", a=5.43, cubic=True) for _ in range(3)]
    frames[2].positions[0, 0] = np.nan
    path = tmp_path / "frames.extxyz"
    write(path, frames)
    assert_one_line_error(capsys, write_recipe(tmp_path, task={"kind": "single_point", "frames": str(path)}),
                          f"{path}: task.frames: frame 2: atom 0 (Si) has a non-finite position")
