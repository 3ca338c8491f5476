"""Recipe schema: what a user may write in recipe.yaml, validated before anything heavy runs.

Paths inside a recipe are relative to the recipe file, so a recipe and its structure files can
be moved together. Every validation failure becomes one `InputError` naming the file and field.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Field, ValidationError, create_model, model_validator

from driver.errors import InputError
from driver.schema import Bool, Strict
from driver.schema_errors import describe_error, merge_union_errors
from driver.specs import CorrectionSpec, ModelSpec, OutputSpec, RunSpec, StructureSpec
from driver.tasks import task_kinds, tasks
from driver.yaml_guard import GuardedLoader, read_yaml_file

log = logging.getLogger(__name__)


def _task_union(specs: tuple[type, ...]) -> Any:
    """Each task kind's `task:` block is declared by its own module (driver.tasks); the recipe
    takes any of them, told apart by `kind`."""
    return Annotated[Union[specs], Field(discriminator="kind")]  # noqa: UP007


BUILTIN_SPECS = tuple(task.spec for task in tasks().values())
Task = _task_union(BUILTIN_SPECS)  # the built-in kinds


TASK_DESCRIPTION = "what to compute: one task section, chosen by its `kind`"


class Recipe(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="run name (letters, digits, _ . -); the default output folder is runs/<name>")
    structure: StructureSpec = Field(description="the starting structure")
    model: ModelSpec = Field(description="the uMLIP: family, weights, device and precision")
    correction: CorrectionSpec | None = Field(
        None, description="the softening correction; null: only the raw model runs")
    compare: Bool = Field(False, description="run the raw model beside the corrected one and compare them "
                          "(needs correction); false: the corrected model only")
    task: Task = Field(description=TASK_DESCRIPTION)
    output: OutputSpec = Field(OutputSpec(), description="where and how results are written")
    run: RunSpec = Field(RunSpec(), description="how the jobs are executed (MD replica batching, structures "
                         "shared over MPI ranks)")

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
        from driver.registry import family

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


_SCHEMAS: dict[tuple[type, ...], type[Recipe]] = {}


def recipe_schema() -> type[Recipe]:
    """The Recipe schema for the task kinds registered now: `Recipe` itself, or a subclass whose
    `task` also takes kinds registered since (driver.tasks.register), built once per set."""
    specs = tuple(task.spec for task in tasks().values())
    if specs == BUILTIN_SPECS:
        return Recipe
    if specs not in _SCHEMAS:
        _SCHEMAS[specs] = create_model("Recipe", __base__=Recipe,
                                      task=(_task_union(specs), Field(description=TASK_DESCRIPTION)))
    return _SCHEMAS[specs]


def parse_recipe(data: Any, source: str, base_dir: Path) -> Recipe:
    """Validate an already-parsed recipe mapping; `source` names it in error messages."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: a recipe must be a mapping of keys, got {type(data).__name__}")
    warnings: list[str] = []  # unusual but allowed values; told only for a valid recipe (an invalid one is one line)
    try:
        recipe = recipe_schema().model_validate(data, context={"base_dir": str(base_dir), "warnings": warnings})
    except ValidationError as exc:
        errors = merge_union_errors(exc.errors(), data)
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise InputError(f"{source}: {describe_error(errors[0], task_kinds())}{more}") from None
    problem = unsupported_dtype(recipe.model)
    if problem is not None:
        raise InputError(f"{source}: {problem}")
    for warning in warnings:
        log.warning("%s: warning: %s", source, warning)
    return recipe


def unsupported_dtype(spec: ModelSpec) -> str | None:
    """Why the family cannot run in the requested precision (None when it can); read by recipe
    parsing and again by load_model, which also gets specs from the command line."""
    from driver.registry import family

    return family(spec.name).unsupported_dtype(spec.dtype)


_RecipeLoader = GuardedLoader  # the recipe's YAML rules are every driver YAML's (driver.yaml_guard)


def load_recipe(path: str | os.PathLike) -> tuple[Recipe, str]:
    """Read and validate a recipe file; returns the recipe and its text (kept as provenance)."""
    path = Path(path)
    data, text = read_yaml_file(path, "recipe file")
    return parse_recipe(data, str(path), path.parent), text
