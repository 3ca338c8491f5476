"""What every recipe section's schema shares: strict keys, finite numbers, paths resolved
against the recipe's folder. The recipe (driver.recipe) and each task's own spec build on it."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationInfo


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
