"""Every bad recipe exits 2 with one line naming the file and the field; good ones validate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from driver.cli import main
from driver.recipe import _RecipeLoader, load_recipe
from tests.conftest import ROOT, write_recipe


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_shipped_recipes_validate(capsys):
    recipes = sorted(str(p) for p in (ROOT / "recipes").glob("*.yaml"))
    assert len(recipes) >= 2
    code, out, err = run_cli(capsys, "validate", *recipes)
    assert code == 0, err
    assert out.count(": ok (") == len(recipes)
    assert "raw-T1000K, corrected-T1000K" in out


BAD_RECIPES = {
    "negative temperature": ({"task": {"temperature_K": -5}}, "task.temperature_K: must be > 0, got -5"),
    "negative in list": ({"task": {"temperature_K": [300, -1]}}, "task.temperature_K: must be > 0, got -1"),
    "unknown top key": ({"colour": "red"}, "colour: unknown key"),
    "unknown nested key": ({"task": {"temprature_K": 300}}, "task.temprature_K: unknown key"),
    "wrong type": ({"task": {"steps": "many"}}, "task.steps:"),
    "zero steps": ({"task": {"steps": 0}}, "task.steps: must be >= 1, got 0"),
    "unknown model": ({"model": {"name": "orb"}}, "model.name: unknown model 'orb'"),
    "missing structure file": ({"structure": {"file": "nowhere/POSCAR"}}, "structure.file: structure file not found"),
    "missing checkpoint": ({"model": {"name": "chgnet", "checkpoint": "gone.pth.tar"}}, "model.checkpoint: checkpoint not found"),
    "bad device": ({"model": {"name": "chgnet", "device": "gpu0"}}, "model.device: must be auto, cpu, cuda or cuda:N"),
    "bad dtype": ({"model": {"name": "chgnet", "dtype": "half"}}, "model.dtype: must be one of 'float32' or 'float64', got 'half'"),
    "bad ensemble": ({"task": {"ensemble": "nvt_magic"}}, "task.ensemble: must be one of 'nve', 'nvt_langevin'"),
    "unknown task kind": ({"task": {"kind": "dance"}}, "task.kind: must be one of 'md', 'phonons', 'neb', 'relax', 'eos', 'elastic', 'single_point', 'diffusion', got 'dance'"),
    "task without kind": ({"task": {"kind": None}}, "task.kind: is required"),
    "phonon supercell twice": ({"task": {"kind": "phonons", "supercell": [2, 2, 2], "supercell_min_length_A": 10}},
                               "task: give exactly one of 'supercell'"),
    "phonon singular matrix": ({"task": {"kind": "phonons", "supercell": [[1, 0, 0], [0, 1, 0], [1, 1, 0]]}},
                               "task: supercell matrix must have a non-zero determinant"),
    "phonon temperatures": ({"task": {"kind": "phonons", "supercell": [2, 2, 2], "t_min_K": 500, "t_max_K": 100}},
                            "task: t_max_K must exceed t_min_K"),
    "phonon unknown key": ({"task": {"kind": "phonons", "supercell": [2, 2, 2], "steps": 3}}, "task.steps: unknown key"),
    "missing task": ({"task": None}, "task: is required"),
    "compare without correction": ({"compare": True}, "compare: true needs a correction"),
    "scale and file": ({"correction": {"scale": 0.8, "file": "x.yaml"}}, "correction.file:"),
    "neither scale nor file": ({"correction": {}}, "correction: give exactly one of 'scale' or 'file'"),
    "zero scale": ({"correction": {"scale": 0}}, "correction.scale: must be > 0, got 0"),
    "zero supercell": ({"structure": {"supercell": [2, 0, 1]}}, "structure.supercell: repeats must be >= 1"),
    "bad name": ({"name": "my run!"}, "name: must start with a letter or digit"),
    "negative write_every": ({"output": {"write_every": -1}}, "output.write_every: must be >= 1, got -1"),
    "negative seed": ({"task": {"seed": -1}}, "task.seed: must be >= 0, got -1"),
    "boolean temperature": ({"task": {"temperature_K": True}}, "task.temperature_K: must be a number in K, got true"),
    "boolean in list": ({"task": {"temperature_K": [300, False]}}, "task.temperature_K: must be a number in K, got false"),
    "infinite temperature": ({"task": {"temperature_K": float("inf")}},
                             "task.temperature_K: must be a finite number in K, got inf"),
    "nan temperature": ({"task": {"temperature_K": [300, float("nan")]}},
                        "task.temperature_K: must be a finite number in K, got nan"),
    "infinite timestep": ({"task": {"timestep_fs": float("inf")}}, "task.timestep_fs: must be a finite number, got inf"),
    "chgnet in float64": ({"model": {"name": "chgnet", "dtype": "float64"}},
                          "model.dtype: chgnet runs in float32 only, got 'float64'"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECIPES))
def test_bad_recipe_is_one_line_exit_2(tmp_path, capsys, case):
    sections, expected = BAD_RECIPES[case]
    recipe = write_recipe(tmp_path, **sections)
    code, out, err = run_cli(capsys, "validate", str(recipe))
    assert code == 2
    assert err.count("\n") == 1, err
    assert str(recipe) in err
    assert expected in err


@pytest.mark.parametrize("sections, expected", [
    ({"task": {"temperature_K": "hot"}}, "task.temperature_K: must be a number or a list of numbers or a ramp {start, stop, steps} or "
     "{schedule: [[step, K], ...]}, got 'hot'"),
    ({"task": {"kind": "phonons", "supercell": [2, 2]}},
     "task.supercell: must be three integers or a 3x3 integer matrix, got [2, 2]"),
    ({"task": {"kind": "phonons", "supercell": [2, 2, 2], "batched": "sometimes"}},
     "task.batched: must be true or false or 'auto', got 'sometimes'"),
])
def test_union_field_error_names_the_field_not_the_branch(tmp_path, capsys, sections, expected):
    """A field typed `A | B` fails once per member; the user sees one problem at the field they wrote."""
    recipe = write_recipe(tmp_path, **sections)
    code, _, err = run_cli(capsys, "validate", str(recipe))
    assert code == 2
    assert err.strip() == f"error: {recipe}: {expected}"


def test_float64_validates_for_families_that_support_it(tmp_path, small_mace_path):
    recipe = write_recipe(tmp_path, model={"name": "mace-mp-0", "checkpoint": str(small_mace_path), "dtype": "float64"})
    loaded, _ = load_recipe(recipe)
    assert loaded.model.dtype == "float64"


def test_duplicate_key_is_refused(tmp_path, capsys):
    recipe = write_recipe(tmp_path)
    text = recipe.read_text().replace("  steps: 10\n", "  steps: 10\n  steps: 20\n")
    assert text.count("steps:") == 2
    recipe.write_text(text)
    code, _, err = run_cli(capsys, "validate", str(recipe))
    assert code == 2 and err.count("\n") == 1
    line = text.splitlines().index("  steps: 20") + 1
    assert f"{recipe}: line {line}, column 3: " in err and "duplicate key 'steps'" in err


def test_yaml_merge_keys_still_work(tmp_path):
    recipe = write_recipe(tmp_path)
    text = recipe.read_text().replace("task:\n", "defaults: &d {steps: 7}\ntask:\n  <<: *d\n").replace("  steps: 10\n", "")
    data = yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 (a SafeLoader)
    assert data["task"]["steps"] == 7


def test_yaml_syntax_error_names_line(tmp_path, capsys):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("name: x\ntask:\n  kind: md\n   steps: [1, 2\n")
    code, _, err = run_cli(capsys, "validate", str(recipe))
    assert code == 2
    assert err.count("\n") == 1
    assert f"{recipe}: line " in err and "YAML syntax error" in err


def test_yaml_is_loaded_safely(tmp_path, capsys):
    recipe = tmp_path / "evil.yaml"
    recipe.write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    code, out, err = run_cli(capsys, "validate", str(recipe))
    assert code == 2 and "hacked" not in out
    assert "YAML syntax error" in err


def test_recipe_must_be_a_mapping(tmp_path, capsys):
    recipe = tmp_path / "list.yaml"
    recipe.write_text("- a\n- b\n")
    code, _, err = run_cli(capsys, "validate", str(recipe))
    assert code == 2 and "must be a mapping" in err


def test_missing_recipe_file(tmp_path, capsys):
    code, _, err = run_cli(capsys, "validate", str(tmp_path / "none.yaml"))
    assert code == 2 and "recipe file not found" in err


def test_unreadable_structure_file(tmp_path, capsys):
    garbage = tmp_path / "garbage.cif"
    garbage.write_text("this is not a crystal\n")
    recipe = write_recipe(tmp_path, structure={"file": str(garbage)})
    code, _, err = run_cli(capsys, "validate", str(recipe))
    assert code == 2 and err.count("\n") == 1
    assert "garbage.cif" in err and "cannot read structure" in err


def test_paths_are_relative_to_the_recipe(tmp_path):
    (tmp_path / "sub").mkdir()
    structure = tmp_path / "sub" / "Si.cif"
    structure.write_bytes((ROOT / "recipes/structures/Si_diamond.cif").read_bytes())
    recipe = write_recipe(tmp_path, structure={"file": "sub/Si.cif"})
    loaded, text = load_recipe(recipe)
    assert Path(loaded.structure.file) == structure.resolve()
    assert "sub/Si.cif" in text


def test_temperature_list_expands_into_jobs(tmp_path, capsys):
    recipe = write_recipe(tmp_path, task={"temperature_K": [600, 900.5]}, correction={"scale": 0.8},
                          compare=True)
    code, out, _ = run_cli(capsys, "validate", str(recipe))
    assert code == 0
    assert "raw-T600K, raw-T900.5K, corrected-T600K, corrected-T900.5K" in out


@pytest.mark.parametrize("content, expected", [
    ("model: chgnet\n", "softening_scale: is required"),
    ("softening_scale: -0.5\n", "softening_scale: must be a number > 0, got -0.5"),
    ("softening_scale: 0.8\nmodel: {name: m3gnet}\n", "model.name: fitted for 'm3gnet', but the recipe's model is 'chgnet'"),
    ("softening_scale: [\n", "YAML syntax error"),
])
def test_bad_correction_file(tmp_path, capsys, content, expected):
    correction = tmp_path / "correction.yaml"
    correction.write_text(content)
    recipe = write_recipe(tmp_path, correction={"file": "correction.yaml"})
    code, _, err = run_cli(capsys, "validate", str(recipe))
    assert code == 2 and err.count("\n") == 1
    assert str(correction) in err and expected in err


def test_good_correction_file_is_accepted(tmp_path, capsys):
    (tmp_path / "correction.yaml").write_text(yaml.safe_dump({"softening_scale": 0.81, "model": {"name": "chgnet"}}))
    recipe = write_recipe(tmp_path, correction={"file": "correction.yaml"}, compare=True)
    code, out, err = run_cli(capsys, "validate", str(recipe))
    assert code == 0, err


def test_existing_output_is_not_overwritten(tmp_path, capsys):
    recipe = write_recipe(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "raw-T500K.h5").write_bytes(b"precious")
    code, _, err = run_cli(capsys, "run", str(recipe))
    assert code == 2 and "output exists; pass --resume" in err and "--overwrite" in err
    assert (out / "raw-T500K.h5").read_bytes() == b"precious"


def test_cli_process_exit_code_and_no_traceback(tmp_path):
    recipe = write_recipe(tmp_path, task={"temperature_K": -5})
    result = subprocess.run([sys.executable, "-m", "driver", "validate", str(recipe)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {recipe}: task.temperature_K: must be > 0, got -5 "
                                                  "(allowed: 0 < temperature_K <= 100000 K)"]
