"""Pydantic's validation errors as the one-line phrases the driver prints: the field's dotted
path, what it must be, and the value the user gave ("task.timestep_fs: must be <= 10, got 20").
One wording for the recipe and for every spec parsed on its own (temperature schedules)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

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


def merge_union_errors(errors: list[dict[str, Any]], data: Any) -> list[dict[str, Any]]:
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


def describe_error(error: dict[str, Any], task_kinds: Collection[str] = ()) -> str:
    """One readable phrase for one pydantic error, with the offending value. `task_kinds`: the
    discriminator tags of the recipe's `task` union ("md"), which pydantic puts in the path and
    the user never wrote."""
    parts = [str(p) for p in error["loc"] if not str(p).startswith("function-")]
    if len(parts) > 1 and parts[0] == "task" and parts[1] in task_kinds:
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
