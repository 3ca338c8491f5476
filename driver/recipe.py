"""Recipe schema: what a user may write in recipe.yaml, validated before anything heavy runs.

Paths inside a recipe are relative to the recipe file, so a recipe and its structure files can
be moved together. Every validation failure becomes one `InputError` naming the file and field.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from driver.correction import MAX_SOFTENING_SCALE
from driver.errors import InputError
from driver.schema import Bool, Int, Strict, bounded, resolve_existing
from driver.tasks import task_kinds, tasks
from driver.yaml_guard import GuardedLoader, read_yaml_file

log = logging.getLogger(__name__)

# Each task kind's `task:` block is declared by its own module (driver.tasks); the recipe takes
# any of them, told apart by `kind`.
TASK_KINDS = task_kinds()
Task = Annotated[Union[tuple(task.spec for task in tasks().values())], Field(discriminator="kind")]  # noqa: UP007



MAX_ATOMS = 20_000  # structure.max_atoms's default: beyond it a run on CPU takes days per step batch


class StructureSpec(Strict):
    """The starting structure: any file ASE reads, optionally repeated into a supercell."""

    file: str
    index: Int = Field(-1, description="frame to take from a multi-frame file")
    supercell: tuple[Int, Int, Int] | None = None
    max_atoms: bounded(int, ge=1, le=10**7) = Field(
        MAX_ATOMS, description="refuse a structure (after `supercell`) or a phonon supercell with more atoms; "
        "raise it on purpose for a larger one")

    @field_validator("file")
    @classmethod
    def _file_exists(cls, value: str, info: ValidationInfo) -> str:
        return resolve_existing(value, info, "structure file")

    @field_validator("supercell")
    @classmethod
    def _positive_repeats(cls, value):
        if value is not None and min(value) < 1:
            raise ValueError(f"repeats must be >= 1, got {list(value)}")
        if value is not None and max(value) > 1000:
            raise ValueError(f"repeats must be <= 1000, got {list(value)}")
        return value


class ModelSpec(Strict):
    """Which uMLIP to load, from where, on which device and in which precision."""

    name: str
    variant: str | None = Field(
        None,
        description="chgnet version (0.3.0), matgl model name, or MACE-MP size (small, medium, ...)",
    )
    checkpoint: str | None = Field(None, description="fine-tuned weights file or folder")
    models_dir: str | None = Field(None, description="folder holding model weights")
    device: str = "auto"
    dtype: Literal["float32", "float64"] = "float32"

    @field_validator("name")
    @classmethod
    def _known_family(cls, value: str) -> str:
        from driver.models.registry import family_names  # the registry imports this module's types

        if value not in family_names():
            raise ValueError(f"unknown model {value!r}; known: {', '.join(family_names())}")
        return value

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        return resolve_existing(value, info, "checkpoint")

    @field_validator("models_dir")
    @classmethod
    def _models_dir_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        return resolve_existing(value, info, "models directory")

    @field_validator("device")
    @classmethod
    def _device_form(cls, value: str) -> str:
        if value == "auto" or value == "cpu" or value == "cuda" or value.startswith("cuda:"):
            return value
        raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {value!r}")


class CorrectionSpec(Strict):
    """The softening correction: a scale given inline, or a file written by `driver fit`."""

    scale: bounded(gt=0, le=MAX_SOFTENING_SCALE, warn_below=0.3, warn_above=1.5,
                   why="fitted scales of uMLIPs lie near 0.6-1.0") | None = None
    file: str | None = None

    @field_validator("file")
    @classmethod
    def _file_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        return resolve_existing(value, info, "correction file")

    @model_validator(mode="after")
    def _exactly_one(self) -> CorrectionSpec:
        if (self.scale is None) == (self.file is None):
            raise ValueError("give exactly one of 'scale' or 'file'")
        return self


class OutputSpec(Strict):
    """Where and how often results are written; datasets are chunked and extended as frames come."""

    directory: str | None = Field(None, description="default: runs/<name> in the working folder")
    write_every: bounded(int, ge=1, le=10**9) = Field(10, description="MD steps between stored frames")
    flush_every: bounded(int, ge=1, le=10**6) = Field(10, description="stored frames between flushes to disk")
    checkpoint_every: bounded(int, ge=1, le=10**9) = Field(100, description="MD steps between restart checkpoints (driver run --resume)")
    compression: Literal["gzip", "lzf"] | None = None
    forces: Bool = True
    velocities: Bool = True
    trajectory: Bool = Field(True, description="false: MD stores observables only, no position/velocity/force "
                             "frames after the first (the start); checkpoints still allow --resume")
    magmoms: Bool = Field(False, description="store per-atom magnetic moments with every frame (CHGNet predicts "
                          "them; computed only for stored frames, never for the dynamics)")


class RunSpec(Strict):
    """How the jobs of a run are executed (not what they compute)."""

    batch_replicas: Bool = Field(False, description="integrate this rank's MD jobs side by side, all replicas "
                                 "evaluated in one batched model call per step (driver.replicas)")
    share_structures: Bool = Field(False, description="under MPI, every rank runs every NEB or phonon job "
                                   "together, each evaluating its share of the images or displaced "
                                   "supercells; rank 0 writes the files (World.map_shared)")


class Recipe(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    structure: StructureSpec
    model: ModelSpec
    correction: CorrectionSpec | None = None
    compare: Bool = False
    task: Task
    output: OutputSpec = OutputSpec()
    run: RunSpec = RunSpec()

    @model_validator(mode="after")
    def _compare_needs_correction(self) -> Recipe:
        if self.compare and self.correction is None:
            raise ValueError("compare: true needs a correction to compare against")
        return self

    @model_validator(mode="after")
    def _strides_within_steps(self) -> Recipe:
        """An output stride given on purpose must fit the run it strides (defaults may exceed short runs)."""
        steps = getattr(self.task, "steps", None)
        for name in ("write_every", "checkpoint_every"):
            if steps is not None and name in self.output.model_fields_set and getattr(self.output, name) > steps:
                raise ValueError(f"output.{name}: must be <= task.steps ({steps}), got {getattr(self.output, name)}")
        return self

    @model_validator(mode="after")
    def _magmoms_need_a_model_that_predicts_them(self) -> Recipe:
        from driver.models.registry import family

        if self.output.magmoms and not family(self.model.name).magmoms:
            raise ValueError(f"output.magmoms: {self.model.name} predicts no magnetic moments (CHGNet does)")
        return self

    @model_validator(mode="after")
    def _trajectory_is_md(self) -> Recipe:
        if not self.output.trajectory and not tasks()[self.task.kind].streams_trajectory:
            raise ValueError(f"output.trajectory: false drops MD frames; task.kind {self.task.kind} writes no "
                             "trajectory (only its structure, as one frame)")
        return self

    @model_validator(mode="after")
    def _replicas_are_md(self) -> Recipe:
        if self.run.batch_replicas and not tasks()[self.task.kind].batches_replicas:
            raise ValueError(f"run.batch_replicas: batches MD replicas; task.kind {self.task.kind} has none "
                             "(NEB images and phonon displacements are batched by the task's own `batched`)")
        return self

    @model_validator(mode="after")
    def _shared_structures_are_neb_or_phonons(self) -> Recipe:
        if self.run.share_structures and not tasks()[self.task.kind].shares_structures:
            raise ValueError(f"run.share_structures: spreads NEB images or phonon displacements over ranks; "
                             f"task.kind {self.task.kind} has neither (its jobs are spread over ranks whole)")
        return self


_TYPE_PHRASES = {
    "int_type": lambda e: "must be an integer",
    "float_type": lambda e: "must be a number",
    "bool_type": lambda e: "must be true or false",
    "string_type": lambda e: "must be a string",
    "greater_than": lambda e: f"must be > {e['ctx']['gt']:g}",
    "greater_than_equal": lambda e: f"must be >= {e['ctx']['ge']:g}",
    "finite_number": lambda e: "must be a finite number",
    "missing": lambda e: "is required",
    "literal_error": lambda e: f"must be one of {e['ctx']['expected']}",
    "union_tag_invalid": lambda e: f"must be one of {e['ctx']['expected_tags']}, got {e['ctx']['tag']!r}",
    "union_tag_not_found": lambda e: "is required",
    "extra_forbidden": lambda e: "unknown key",
    "string_pattern_mismatch": lambda e: "must start with a letter or digit and use only letters, "
    "digits, '_', '.', '-'",
}


_BRANCH_NAMES = {
    "float": "a number",
    "int": "an integer",
    "bool": "true or false",
    "list[float]": "a list of numbers",
    "tuple[int, int, int]": "three integers",
    "tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]": "a 3x3 integer matrix",
    "TemperatureRamp": "a ramp {start, stop, steps}",  # task.temperature_K's schedules (driver.tasks.md_schedule)
    "TemperaturePoints": "{schedule: [[step, K], ...]}",
}


def _is_union_branch(part: Any) -> bool:
    """Pydantic names the member of a `A | B` field it tried ('float', 'list[float]', "literal['auto']");
    recipe keys are identifiers and never these type names."""
    if not isinstance(part, str) or part.startswith("function-"):
        return False
    return not part.isidentifier() or part in ("float", "int", "bool", "str") or part in _BRANCH_NAMES


def _value_at(data: Any, loc: tuple) -> Any:
    """The user's value at a pydantic location (discriminator tags such as 'md' are not in the data)."""
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        elif not (isinstance(data, dict) and isinstance(part, str)):
            return None
    return data


def _merge_union_errors(errors: list[dict[str, Any]], data: Any) -> list[dict[str, Any]]:
    """One error per union field, naming the forms it accepts, instead of one per member tried."""
    merged: list[dict[str, Any]] = []
    unions: dict[tuple, dict[str, Any]] = {}
    for error in errors:
        cut = next((i for i, part in enumerate(error["loc"]) if _is_union_branch(part)), None)
        if cut is None:
            merged.append(error)
            continue
        loc, branch = tuple(error["loc"][:cut]), error["loc"][cut]
        if loc not in unions:
            unions[loc] = {"type": "union_mismatch", "loc": loc, "branches": [], "input": _value_at(data, loc)}
            merged.append(unions[loc])
        if branch not in unions[loc]["branches"]:
            unions[loc]["branches"].append(branch)
    return merged


def _branch_name(branch: str) -> str:
    if branch.startswith("literal[") and branch.endswith("]"):
        return branch[len("literal["):-1]
    return _BRANCH_NAMES.get(branch, branch)


def _describe(error: dict[str, Any]) -> str:
    """One readable phrase for one pydantic error, with the offending value."""
    parts = [str(p) for p in error["loc"] if not str(p).startswith("function-")]
    # Discriminated unions put the tag ("md") in the path; the user never wrote it.
    if len(parts) > 1 and parts[0] == "task" and parts[1] in TASK_KINDS:
        del parts[1]
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        parts.append("kind")
    location = ".".join(parts)
    phrase_for = _TYPE_PHRASES.get(error["type"])
    if error["type"] == "union_mismatch":
        message = f"must be {' or '.join(_branch_name(b) for b in error['branches'])}, got {error['input']!r}"
    elif phrase_for is not None:
        message = phrase_for(error)
        if error["type"] not in ("missing", "extra_forbidden", "union_tag_invalid", "union_tag_not_found"):
            message += f", got {error['input']!r}"
    else:
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] not in ("value_error",) and "input" in error:
            message += f", got {error['input']!r}"
    return f"{location}: {message}" if location else message


def parse_recipe(data: Any, source: str, base_dir: Path) -> Recipe:
    """Validate an already-parsed recipe mapping; `source` names it in error messages."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: a recipe must be a mapping of keys, got {type(data).__name__}")
    warnings: list[str] = []  # unusual but allowed values; told only for a valid recipe (an invalid one is one line)
    try:
        recipe = Recipe.model_validate(data, context={"base_dir": str(base_dir), "warnings": warnings})
    except ValidationError as exc:
        errors = _merge_union_errors(exc.errors(), data)
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise InputError(f"{source}: {_describe(errors[0])}{more}") from None
    problem = unsupported_dtype(recipe.model)
    if problem is not None:
        raise InputError(f"{source}: {problem}")
    for warning in warnings:
        log.warning("%s: warning: %s", source, warning)
    return recipe


def unsupported_dtype(spec: ModelSpec) -> str | None:
    """Why the family cannot run in the requested precision (None when it can); read by recipe
    parsing and again by load_model, which also gets specs from the command line."""
    from driver.models.registry import family

    return family(spec.name).unsupported_dtype(spec.dtype)


_RecipeLoader = GuardedLoader  # the recipe's YAML rules are every driver YAML's (driver.yaml_guard)


def load_recipe(path: str | os.PathLike) -> tuple[Recipe, str]:
    """Read and validate a recipe file; returns the recipe and its text (kept as provenance)."""
    path = Path(path)
    data, text = read_yaml_file(path, "recipe file")
    return parse_recipe(data, str(path), path.parent), text
