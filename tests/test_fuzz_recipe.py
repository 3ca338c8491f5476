"""Property-based fuzz of `driver validate`: mutate valid recipes (wrong types, missing and unknown
keys, extreme values, garbage files) and check that every invalid one is exit 2, one line on
stderr and no traceback, that every valid mutation still validates, and that no input at all
makes validate raise. Deterministic (derandomize) and bounded: a few hundred recipes, seconds."""

from __future__ import annotations

import contextlib
import copy
import io
import math
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driver.cli import main
from tests.conftest import SI_CIF

BASE = {
    "name": "fuzz",
    "structure": {"file": str(SI_CIF)},
    "model": {"name": "chgnet"},
    "correction": {"scale": 0.8},
    "task": {"kind": "md", "ensemble": "nvt_langevin", "timestep_fs": 2.0, "steps": 10, "temperature_K": 500,
             "seed": 1},
    "output": {"write_every": 2, "flush_every": 2},
}
REQUIRED = {("name",), ("structure",), ("model",), ("task",), ("structure", "file"), ("model", "name"),
            ("task", "kind"), ("task", "timestep_fs"), ("task", "steps"), ("task", "temperature_K")}
OPTIONAL = sorted({(section, key) for section, fields in BASE.items() if isinstance(fields, dict)
                   for key in fields} - REQUIRED - {("correction", "scale")}) + [("correction",), ("output",)]

ENSEMBLES = ["nve", "nvt_langevin", "nvt_nose_hoover", "nvt_bussi", "npt_berendsen", "npt_mtk"]
finite = st.floats(allow_nan=False, allow_infinity=False)
# Values each field takes (and the recipe still validates) ...
VALID = {
    ("task", "steps"): st.integers(10, 10**9),
    ("task", "timestep_fs"): st.floats(0.01, 5.0) | st.integers(1, 5),
    ("task", "temperature_K"): st.floats(1.0, 1e5) | st.lists(st.floats(1.0, 1e5), min_size=1, max_size=3, unique=True),
    ("task", "seed"): st.integers(0, 2**32 - 1),
    ("task", "ensemble"): st.sampled_from(ENSEMBLES),
    ("task", "friction_per_fs"): st.floats(1e-4, 1.0),
    ("task", "min_distance_A"): st.floats(0.1, 1.0),
    ("correction", "scale"): st.floats(0.3, 1.5),
    ("output", "write_every"): st.integers(1, 10),
    ("output", "flush_every"): st.integers(1, 10**6),
    ("output", "checkpoint_every"): st.integers(1, 10),
    ("output", "forces"): st.booleans(),
    ("output", "compression"): st.sampled_from(["gzip", "lzf", None]),
    ("model", "device"): st.sampled_from(["auto", "cpu", "cuda", "cuda:1"]),
    ("name",): st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,20}\Z"),
}
# ... and values they never take: wrong types and magnitudes outside the bounds.
NUMBER_FIELDS = {("task", "timestep_fs"): 10, ("task", "temperature_K"): 1e5, ("correction", "scale"): 5,
                 ("task", "friction_per_fs"): 10, ("task", "min_distance_A"): 5}
INT_FIELDS = {("task", "steps"): 10**9, ("task", "seed"): 2**32 - 1, ("output", "write_every"): 10,
              ("output", "flush_every"): 10**6, ("output", "checkpoint_every"): 10}
not_a_number = st.booleans() | st.text(max_size=8) | st.none() | st.just([]) | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)


def invalid_for(path: tuple) -> st.SearchStrategy:
    if path in NUMBER_FIELDS:
        limit = NUMBER_FIELDS[path]
        return (not_a_number | st.floats(max_value=0.0) | st.floats(min_value=limit, exclude_min=True)
                | st.sampled_from([math.nan, math.inf, -math.inf, 1e30]))
    if path in INT_FIELDS:
        limit = INT_FIELDS[path]
        return (not_a_number | st.integers(max_value=-1) | st.integers(min_value=limit + 1)
                | st.floats())  # a float, even 10.0, is never an integer
    if path == ("output", "forces"):
        return st.integers() | st.text(max_size=5) | finite | st.none()
    if path in (("task", "ensemble"), ("model", "device")):
        return st.text(max_size=10).filter(lambda s: s not in ENSEMBLES + ["auto", "cpu", "cuda"]
                                           and not s.startswith("cuda:")) | st.integers() | st.booleans()
    if path == ("name",):
        return st.text(max_size=10).filter(lambda s: not s[:1].isalnum() or not all(c.isalnum() or c in "_.-" for c in s)
                                           or not s.isascii()) | st.integers() | st.none()
    raise KeyError(path)


yaml_values = st.recursive(st.none() | st.booleans() | st.integers() | finite | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=6)
garbage = st.binary(max_size=300) | st.text(max_size=300).map(str.encode)


@st.composite
def mutations(draw) -> tuple[dict | bytes, dict, str]:
    """(recipe or raw recipe bytes, {file name: bytes} written beside it, expected: 'valid' | 'invalid')."""
    recipe = copy.deepcopy(BASE)
    kind = draw(st.sampled_from(["valid value", "invalid value", "drop required", "drop optional", "unknown key",
                                 "garbage recipe", "garbage structure", "garbage correction", "anything"]))
    if kind == "valid value":
        path = draw(st.sampled_from(sorted(VALID)))
        _set(recipe, path, draw(VALID[path]))
        return recipe, {}, "valid"
    if kind == "invalid value":
        path = draw(st.sampled_from(sorted(set(NUMBER_FIELDS) | set(INT_FIELDS) | {("output", "forces"),
                                                                                  ("task", "ensemble"), ("model", "device"), ("name",)})))
        value = draw(invalid_for(path))
        _set(recipe, path, value)
        return recipe, {}, "invalid"
    if kind == "drop required":
        _drop(recipe, draw(st.sampled_from(sorted(REQUIRED))))
        return recipe, {}, "invalid"
    if kind == "drop optional":
        _drop(recipe, draw(st.sampled_from(OPTIONAL)))
        return recipe, {}, "valid"
    if kind == "unknown key":
        section = draw(st.sampled_from([(), ("structure",), ("model",), ("correction",), ("task",), ("output",)]))
        key = draw(st.from_regex(r"\A[a-z_]{1,12}\Z"))
        target = _get(recipe, section) if section else recipe
        if key in target or (section == ("task",) and key in _MD_FIELDS) or (section == ("output",) and key in _OUTPUT_FIELDS) \
                or (section == () and key in ("compare", "run")) or (section == ("structure",) and key in ("index", "supercell", "max_atoms")) \
                or (section == ("model",) and key in ("variant", "checkpoint", "models_dir", "device", "dtype")) \
                or (section == ("correction",) and key == "file"):
            key = key + "_zz"
        target[key] = draw(yaml_values)
        return recipe, {}, "invalid"
    if kind == "garbage recipe":
        return draw(garbage), {}, "invalid"
    if kind == "garbage structure":
        recipe["structure"]["file"] = "structure.cif"
        return recipe, {"structure.cif": draw(garbage)}, "invalid"
    if kind == "garbage correction":
        recipe["correction"] = {"file": "correction.yaml"}
        return recipe, {"correction.yaml": draw(garbage)}, "invalid"
    # anything at any known place: the outcome is not predicted, only that it is one of the two
    path = draw(st.sampled_from(sorted(REQUIRED | set(OPTIONAL) | set(VALID))))
    _set(recipe, path, draw(yaml_values))
    return recipe, {}, "either"


_MD_FIELDS = {"ensemble", "timestep_fs", "steps", "temperature_K", "seed", "friction_per_fs", "tdamp_fs", "pressure_GPa",
              "pdamp_fs", "compressibility_per_GPa", "relax", "min_distance_A", "max_temperature_factor", "kind"}
_OUTPUT_FIELDS = {"directory", "write_every", "flush_every", "checkpoint_every", "compression", "forces", "velocities"}


def _get(recipe: dict, path: tuple):
    for key in path:
        recipe = recipe[key]
    return recipe


def _set(recipe: dict, path: tuple, value) -> None:
    parent = recipe
    for key in path[:-1]:
        if not isinstance(parent.get(key), dict):
            parent[key] = {}
        parent = parent[key]
    parent[path[-1]] = value


def _drop(recipe: dict, path: tuple) -> None:
    parent = _get(recipe, path[:-1]) if len(path) > 1 else recipe
    parent.pop(path[-1], None)


def run_validate(recipe: dict | bytes, files: dict[str, bytes]) -> tuple[int, str]:
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for name, content in files.items():
            (folder / name).write_bytes(content)
        path = folder / "recipe.yaml"
        path.write_bytes(recipe if isinstance(recipe, bytes) else yaml.safe_dump(recipe, allow_unicode=True).encode())
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["validate", str(path)])  # any exception escaping fails the test
        return code, err.getvalue()


@settings(max_examples=250, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(mutations())
def test_mutated_recipes(mutation):
    recipe, files, expected = mutation
    code, err = run_validate(recipe, files)
    assert "Traceback" not in err
    if expected == "valid":
        assert code == 0, err
    elif expected == "invalid":
        assert code == 2, f"validated: {recipe!r}"
    if code != 0:
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
