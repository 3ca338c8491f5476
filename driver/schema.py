"""What every recipe section's schema shares: strict keys, strict types, bounded finite numbers,
paths resolved against the recipe's folder. The recipe (driver.recipe) and each task's own spec
build on it.

Fields use Float, Int and Bool (or `bounded(...)`), never bare float/int/bool: pydantic's lax
mode reads YAML's `true` as 1, "1e3" as a number and 10.0 as an integer. Here a boolean is never
a number, a number never a boolean, a string never either, and an integer field takes integers
only (a float field takes integers too).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, GetJsonSchemaHandler, ValidationInfo
from pydantic import Strict as StrictType

log = logging.getLogger("driver.recipe")

Float = Annotated[float, StrictType()]
Int = Annotated[int, StrictType()]
Bool = Annotated[bool, StrictType()]


class Strict(BaseModel):
    # No recipe number is meaningful as inf or nan (YAML's .inf, .nan); unknown keys are errors.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def resolve_existing(value: str | None, info: ValidationInfo, what: str) -> str | None:
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


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


@dataclass(frozen=True)
class _BoundsInSchema:
    """A bounded field's limits in the recipe's JSON schema (`Recipe.model_json_schema()`), so that
    the generated reference (docs/generate.py) states the bounds the validator enforces."""

    gt: float | None
    ge: float | None
    le: float | None
    unit: str
    warn_below: float | None
    warn_above: float | None
    why: str

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: GetJsonSchemaHandler) -> dict:
        schema = handler(core_schema)
        for key, value in (("exclusiveMinimum", self.gt), ("minimum", self.ge), ("maximum", self.le),
                           ("x-usual-min", self.warn_below), ("x-usual-max", self.warn_above)):
            if value is not None:
                schema[key] = value
        if self.unit:
            schema["x-unit"] = self.unit
        if self.why:
            schema["x-usual-why"] = self.why
        return schema


def bounded(kind: type = float, *, gt: float | None = None, ge: float | None = None, le: float | None = None,
            unit: str = "", warn_below: float | None = None, warn_above: float | None = None, why: str = ""):
    """A strict number within physical or practical bounds. A value outside is refused with the
    violated bound and the whole allowed range ("must be <= 10, got 1e+30 (allowed: 0 < timestep_fs
    <= 10 fs)"); one outside the warn_* limits validates with a warning saying why."""
    suffix = f" {unit}" if unit else ""

    def check(value, info: ValidationInfo):
        name = info.field_name or "value"
        low = f"{_number(gt)} < " if gt is not None else f"{_number(ge)} <= " if ge is not None else ""
        high = f" <= {_number(le)}" if le is not None else ""
        allowed = f"(allowed: {low}{name}{high}{suffix})"
        for bound, broken, sign in ((gt, lambda b: not value > b, ">"), (ge, lambda b: not value >= b, ">="),
                                    (le, lambda b: not value <= b, "<=")):
            if bound is not None and broken(bound):
                raise ValueError(f"must be {sign} {_number(bound)}, got {value!r} {allowed}")
        if (warn_below is not None and value < warn_below) or (warn_above is not None and value > warn_above):
            usual = f"{_number(warn_below) if warn_below is not None else ''}..{_number(warn_above) if warn_above is not None else ''}"
            warning = f"{name} = {value!r}{suffix} is outside the usual {usual}{suffix}{f' ({why})' if why else ''}"
            pending = (info.context or {}).get("warnings")
            if pending is not None:  # parse_recipe logs them once the whole recipe is valid
                pending.append(warning)
            else:
                log.warning("warning: %s", warning)
        return value

    return Annotated[kind, StrictType(), AfterValidator(check),
                     _BoundsInSchema(gt, ge, le, unit, warn_below, warn_above, why)]
