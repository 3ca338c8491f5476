"""Recipe schema: what a user may write in recipe.yaml, validated before anything heavy runs.

Paths inside a recipe are relative to the recipe file, so a recipe and its structure files can
be moved together. Every validation failure becomes one `InputError` naming the file and field.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from driver.errors import InputError

MODEL_FAMILIES = ("chgnet", "m3gnet", "mace-mp-0")
# Precisions each family can run in, checked when a recipe is read (the loaders check again).
FAMILY_DTYPES = {"chgnet": ("float32",), "m3gnet": ("float32", "float64"), "mace-mp-0": ("float32", "float64")}
assert set(FAMILY_DTYPES) == set(MODEL_FAMILIES)


class _Strict(BaseModel):
    # No recipe number is meaningful as inf or nan (YAML's .inf, .nan).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _resolve_existing(value: str | None, info: ValidationInfo, what: str) -> str | None:
    """Resolve a path against the recipe's folder and insist it exists."""
    if value is None:
        return None
    base = Path((info.context or {}).get("base_dir", "."))
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        path = base / path
    if not path.exists():
        raise ValueError(f"{what} not found: {path}")
    return str(path.resolve())


class StructureSpec(_Strict):
    """The starting structure: any file ASE reads, optionally repeated into a supercell."""

    file: str
    index: int = Field(-1, description="frame to take from a multi-frame file")
    supercell: tuple[int, int, int] | None = None

    @field_validator("file")
    @classmethod
    def _file_exists(cls, value: str, info: ValidationInfo) -> str:
        return _resolve_existing(value, info, "structure file")

    @field_validator("supercell")
    @classmethod
    def _positive_repeats(cls, value):
        if value is not None and min(value) < 1:
            raise ValueError(f"repeats must be >= 1, got {list(value)}")
        return value


class ModelSpec(_Strict):
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
        if value not in MODEL_FAMILIES:
            raise ValueError(f"unknown model {value!r}; known: {', '.join(MODEL_FAMILIES)}")
        return value

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _resolve_existing(value, info, "checkpoint")

    @field_validator("models_dir")
    @classmethod
    def _models_dir_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _resolve_existing(value, info, "models directory")

    @field_validator("device")
    @classmethod
    def _device_form(cls, value: str) -> str:
        if value == "auto" or value == "cpu" or value == "cuda" or value.startswith("cuda:"):
            return value
        raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {value!r}")


class CorrectionSpec(_Strict):
    """The softening correction: a scale given inline, or a file written by `driver fit`."""

    scale: float | None = Field(None, gt=0)
    file: str | None = None

    @field_validator("file")
    @classmethod
    def _file_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _resolve_existing(value, info, "correction file")

    @model_validator(mode="after")
    def _exactly_one(self) -> CorrectionSpec:
        if (self.scale is None) == (self.file is None):
            raise ValueError("give exactly one of 'scale' or 'file'")
        return self


class RelaxSpec(_Strict):
    """Pre-relaxation of positions (cell fixed) with the raw model before dynamics."""

    fmax_eV_A: float = Field(0.05, gt=0)
    max_steps: int = Field(200, ge=1)


Ensemble = Literal["nve", "nvt_langevin", "nvt_nose_hoover", "nvt_bussi", "npt_berendsen", "npt_mtk"]


class MDTask(_Strict):
    """Molecular dynamics with one of ASE's integrators; one job per temperature."""

    kind: Literal["md"]
    ensemble: Ensemble = "nvt_langevin"
    timestep_fs: float = Field(gt=0)
    steps: int = Field(ge=1)
    temperature_K: float | list[float]
    seed: int = Field(0, ge=0, description="numpy RNG seed for velocities and thermostat noise")
    friction_per_fs: float = Field(0.01, gt=0, description="Langevin friction")
    tdamp_fs: float = Field(100.0, gt=0, description="thermostat time constant")
    pressure_GPa: float = 0.0
    pdamp_fs: float = Field(1000.0, gt=0, description="barostat time constant")
    compressibility_per_GPa: float = Field(
        0.01, gt=0, description="Berendsen barostat compressibility"
    )
    relax: RelaxSpec | None = None
    min_distance_A: float = Field(0.5, gt=0, description="stop when two atoms come closer (explosion)")
    max_temperature_factor: float = Field(5.0, gt=1, description="stop when T exceeds this x target")

    @field_validator("temperature_K", mode="before")
    @classmethod
    def _real_temperatures(cls, value):
        """Before pydantic's coercion, which would read `true` as 1 K."""
        for t in value if isinstance(value, list) else [value]:
            if isinstance(t, bool):
                raise ValueError(f"must be a number in K, got {str(t).lower()}")
            if isinstance(t, float) and not math.isfinite(t):
                raise ValueError(f"must be a finite number in K, got {t!r}")
        return value

    @field_validator("temperature_K")
    @classmethod
    def _positive_temperatures(cls, value):
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ValueError("must list at least one temperature")
        for t in values:
            if not t > 0:
                raise ValueError(f"must be > 0, got {t:g}")
        if len(set(values)) != len(values):
            raise ValueError(f"temperatures repeat: {values}")
        return value

    @property
    def temperatures_K(self) -> list[float]:
        return list(self.temperature_K) if isinstance(self.temperature_K, list) else [
            self.temperature_K
        ]


class CellRelaxSpec(_Strict):
    """Pre-relaxation of positions and, by default, the cell (FIRE on ASE's FrechetCellFilter)."""

    fmax_eV_A: float = Field(0.01, gt=0)
    max_steps: int = Field(500, ge=1)
    relax_cell: bool = True


class PhononTask(_Strict):
    """Harmonic phonons by finite displacements with phonopy; one job per variant."""

    kind: Literal["phonons"]
    supercell: tuple[int, int, int] | tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]] | None = None
    supercell_min_length_A: float | None = Field(None, gt=0)
    displacement_A: float = Field(0.01, gt=0)
    symmetry: bool = True
    primitive: Literal["auto", "unit_cell"] = "auto"
    relax: CellRelaxSpec | None = None
    band_points: int = Field(51, ge=2, description="q-points per band-path segment")
    mesh: tuple[int, int, int] | float = Field(30.0, description="DOS/thermal mesh: divisions or a length in Å")
    t_min_K: float = Field(0.0, ge=0)
    t_max_K: float = Field(1000.0, gt=0)
    t_step_K: float = Field(10.0, gt=0)
    imaginary_tolerance_THz: float = Field(0.05, gt=0)
    batched: bool | Literal["auto"] = Field("auto", description="many supercells per model call; auto: where faster")
    batch_size: int | None = Field(None, ge=1, description="displaced supercells per model call")

    @model_validator(mode="after")
    def _one_supercell_rule(self) -> PhononTask:
        if (self.supercell is None) == (self.supercell_min_length_A is None):
            raise ValueError("give exactly one of 'supercell' (repeats or 3x3 matrix) or 'supercell_min_length_A'")
        if self.supercell is not None and abs(np.linalg.det(np.diag(self.supercell) if len(np.shape(self.supercell)) == 1
                                                            else np.array(self.supercell))) < 1:
            raise ValueError(f"supercell matrix must have a non-zero determinant, got {self.supercell}")
        if self.t_max_K <= self.t_min_K:
            raise ValueError(f"t_max_K must exceed t_min_K, got {self.t_min_K:g} and {self.t_max_K:g}")
        return self


class VacancyHop(_Strict):
    """The ion at site `from` hops into the vacancy left by removing the same-species atom at `to`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    species: str
    from_site: int = Field(alias="from", ge=0)
    to_site: int | Literal["nearest"] = Field("nearest", alias="to")


class InterstitialHop(_Strict):
    """An extra ion of `species` hops between two interstitial sites (fractional coordinates)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    species: str
    from_fractional: tuple[float, float, float] = Field(alias="from")
    to_fractional: tuple[float, float, float] = Field(alias="to")


class NEBTask(_Strict):
    """Minimum-energy path between two endpoints with ASE's NEB; one job per variant."""

    kind: Literal["neb"]
    final: str | None = Field(None, description="final endpoint file; `structure` is then the initial one")
    vacancy_hop: VacancyHop | None = None
    interstitial_hop: InterstitialHop | None = None
    relax_endpoints: bool = True
    endpoint_fmax_eV_A: float = Field(0.02, gt=0)
    endpoint_max_steps: int = Field(500, ge=1)
    n_images: int = Field(5, ge=1, description="intermediate images")
    interpolation: Literal["idpp", "linear"] = "idpp"
    climb: bool = True
    method: Literal["improvedtangent", "aseneb", "eb", "spline", "string"] = "improvedtangent"
    optimizer: Literal["fire", "bfgs", "ode"] = "fire"
    fmax_eV_A: float = Field(0.05, gt=0)
    max_steps: int = Field(500, ge=1)
    spring_constant_eV_A2: float = Field(0.1, gt=0)
    batched: bool | Literal["auto"] = Field("auto", description="all moving images in one model call per "
                                           "iteration; auto: where that is faster (not CHGNet on CPU)")
    batch_size: int | None = Field(None, ge=1)

    @field_validator("final")
    @classmethod
    def _final_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _resolve_existing(value, info, "final endpoint file")

    @model_validator(mode="after")
    def _one_endpoint_rule(self) -> NEBTask:
        given = [name for name in ("final", "vacancy_hop", "interstitial_hop") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of 'final', 'vacancy_hop' or 'interstitial_hop', got {given or 'none'}")
        return self


TASK_KINDS = ("md", "phonons", "neb")
Task = Annotated[MDTask | PhononTask | NEBTask, Field(discriminator="kind")]


class OutputSpec(_Strict):
    """Where and how often results are written; datasets are chunked and extended as frames come."""

    directory: str | None = Field(None, description="default: runs/<name> in the working folder")
    write_every: int = Field(10, ge=1, description="MD steps between stored frames")
    flush_every: int = Field(10, ge=1, description="stored frames between flushes to disk")
    checkpoint_every: int = Field(100, ge=1, description="MD steps between restart checkpoints (driver run --resume)")
    compression: Literal["gzip", "lzf"] | None = None
    forces: bool = True
    velocities: bool = True


class RunSpec(_Strict):
    """How the jobs of a run are executed (not what they compute)."""

    batch_replicas: bool = Field(False, description="integrate this rank's MD jobs side by side, all replicas "
                                 "evaluated in one batched model call per step (driver.replicas)")
    share_structures: bool = Field(False, description="under MPI, every rank runs every NEB or phonon job "
                                   "together, each evaluating its share of the images or displaced "
                                   "supercells; rank 0 writes the files (World.map_shared)")


class Recipe(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    structure: StructureSpec
    model: ModelSpec
    correction: CorrectionSpec | None = None
    compare: bool = False
    task: Task
    output: OutputSpec = OutputSpec()
    run: RunSpec = RunSpec()

    @model_validator(mode="after")
    def _compare_needs_correction(self) -> Recipe:
        if self.compare and self.correction is None:
            raise ValueError("compare: true needs a correction to compare against")
        return self

    @model_validator(mode="after")
    def _replicas_are_md(self) -> Recipe:
        if self.run.batch_replicas and self.task.kind != "md":
            raise ValueError(f"run.batch_replicas: batches MD replicas; task.kind {self.task.kind} has none "
                             "(NEB images and phonon displacements are batched by the task's own `batched`)")
        return self

    @model_validator(mode="after")
    def _shared_structures_are_neb_or_phonons(self) -> Recipe:
        if self.run.share_structures and self.task.kind not in ("neb", "phonons"):
            raise ValueError(f"run.share_structures: spreads NEB images or phonon displacements over ranks; "
                             f"task.kind {self.task.kind} has neither (its jobs are spread over ranks whole)")
        return self


_TYPE_PHRASES = {
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
}


def _is_union_branch(part: Any) -> bool:
    """Pydantic names the member of a `A | B` field it tried ('float', 'list[float]', "literal['auto']");
    recipe keys are identifiers and never these type names."""
    if not isinstance(part, str) or part.startswith("function-"):
        return False
    return not part.isidentifier() or part in ("float", "int", "bool", "str")


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
    try:
        recipe = Recipe.model_validate(data, context={"base_dir": str(base_dir)})
    except ValidationError as exc:
        errors = _merge_union_errors(exc.errors(), data)
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise InputError(f"{source}: {_describe(errors[0])}{more}") from None
    problem = unsupported_dtype(recipe.model)
    if problem is not None:
        raise InputError(f"{source}: {problem}")
    return recipe


def unsupported_dtype(spec: ModelSpec) -> str | None:
    """Why the family cannot run in the requested precision (None when it can); read by recipe
    parsing and again by the loaders, which also get specs from the command line."""
    supported = FAMILY_DTYPES[spec.name]
    if spec.dtype in supported:
        return None
    return f"model.dtype: {spec.name} runs in {' or '.join(supported)} only, got {spec.dtype!r}"


class _RecipeLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error, not a silent overwrite."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges; explicit keys may override merged ones
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # unhashable: SafeLoader reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_recipe(path: str | os.PathLike) -> tuple[Recipe, str]:
    """Read and validate a recipe file; returns the recipe and its text (kept as provenance)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"{path}: recipe file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read recipe: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{path}: {where}YAML syntax error: {problem}") from None
    return parse_recipe(data, str(path), path.parent), text
